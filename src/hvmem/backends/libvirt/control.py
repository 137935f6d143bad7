"""The controller loop over a libvirt connection: the QEMU controller's, described as libvirt's.

``ControlLoop`` (backends/qemu/control.py) runs sample -> plan -> apply once a
balance period and records a row per tick from what a backend's guests expose;
:class:`~hvmem.backends.libvirt.backend.LibvirtBackend`'s guests expose the same
attributes, so the loop, the rows, the metrics and the results are one. The
scenario a results directory records names the connection, and the rows carry
the guest's own paging, which ``memoryStats`` reports (``swap_in``,
``swap_out``) and QMP does not.
"""

from __future__ import annotations

from dataclasses import replace

from hvmem.backends.qemu.backend import Observation
from hvmem.backends.qemu.control import ControlLoop
from hvmem.scenario.schema import Scenario

__all__ = ["LibvirtControlLoop"]


class LibvirtControlLoop(ControlLoop):
    """:class:`ControlLoop` whose results describe the libvirt connection."""

    def _scenario(self, ticks: int) -> Scenario:
        scenario = super()._scenario(ticks)
        return replace(scenario, description=(
            f"libvirt domains of {self.backend.uri} under hvmem libvirt control"
            + (" (dry run: plans not applied)" if self.dry_run else "")))

    def _record(self, obs: Observation) -> None:
        start = len(self.result.vm_rows)
        super()._record(obs)
        for row in self.result.vm_rows[start:]:
            g = self.backend.guests.get(row["vm"])
            if g is not None:
                row["guest_swap_in_mib_s"] = g.guest_swap_in_mib_s
                row["guest_swap_out_mib_s"] = g.guest_swap_out_mib_s
