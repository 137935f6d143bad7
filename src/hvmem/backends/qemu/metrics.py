"""A Prometheus endpoint with the counters of the live view and the results directory.

What it exposes
---------------
Every tick of ``hvmem qemu control`` records one host row and one row per VM
(control.py), the rows a simulated run records too. :class:`Metrics` publishes
the newest of them through ``prometheus_client``, named as Prometheus asks:
base units (``_bytes``, ``_seconds``, ``_ratio``; the rows' MiB are multiplied
out), ``_total`` on counters, and the esxtop column in the name:

* host: ``hvmem_host_total_bytes``, ``hvmem_host_free_bytes``,
  ``hvmem_host_minfree_bytes``, ``hvmem_host_shared_saved_bytes`` (what KSM
  saves); ``hvmem_host_state{state=...}`` is 1 for the current memory state and 0
  for the others; KSM's own figures ``hvmem_host_ksm_pages_sharing``,
  ``hvmem_host_ksm_pages_to_scan`` and ``hvmem_host_ksm_run`` (0 stopped, 1
  merging, 2 unmerging), present while hvmem drives KSM;
* each VM, label ``vm``: ``hvmem_vm_<column>_bytes`` for each esxtop size
  column of the live view (ui/top.py ``COLUMNS``: ``MEMSZ`` becomes
  ``hvmem_vm_memsz_bytes``) and ``hvmem_vm_<column>_bytes_per_second`` for each
  rate (``SWR/s``: ``hvmem_vm_swr_bytes_per_second``); the memory-cgroup limit
  ``hvmem_vm_cgroup_limit_bytes`` (NaN while none is set), the QEMU process's
  resident memory ``hvmem_vm_qemu_rss_bytes`` and CPU share ``hvmem_vm_cpu_ratio``;
* the controller's own state: ``hvmem_vm_up`` (1 while the guest answers, 0 once
  it is stalled, dropped or failed to attach; it stays, at 0, when the VM leaves),
  ``hvmem_vm_guest_available_bytes``, ``hvmem_vm_balloon_stuck``, pressure stall
  information as ``hvmem_vm_memory_pressure_some_ratio`` and
  ``hvmem_host_memory_pressure_{some,full}_ratio`` (PSI avg10), and KSM's
  ``hvmem_host_ksm_sleep_seconds``;
* ``hvmem_decisions_total`` and ``hvmem_events_total{event=...}``: counters.

These names replaced MiB-valued ones (``hvmem_host_free_mib``,
``hvmem_vm_memsz_mib``, ``hvmem_vm_swr_mib_per_second``, ``hvmem_vm_cpu_frac``);
docs/changes.md lists the old and the new. ``dashboards/hvmem-controller.json``
is a Grafana dashboard over them.

A VM that leaves control disappears from the gauges but ``hvmem_vm_up``. The server
binds to
127.0.0.1 unless told otherwise: the numbers describe the host's guests, which
is nothing to publish to a network by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["Metrics", "metric_name"]

MIB_BYTES = 1 << 20
#: Host gauges: row key, metric name, help, factor from the row's unit to the metric's.
HOST_GAUGES = (
    ("total_mib", "hvmem_host_total_bytes", "Host memory hvmem manages", MIB_BYTES),
    ("free_mib", "hvmem_host_free_bytes", "Free host memory in hvmem's budget", MIB_BYTES),
    ("minfree_mib", "hvmem_host_minfree_bytes", "The memory states' minFree", MIB_BYTES),
    ("shared_saved_mib", "hvmem_host_shared_saved_bytes", "Memory KSM sharing saves",
     MIB_BYTES),
    ("ksm_pages_sharing", "hvmem_host_ksm_pages_sharing", "KSM pages_sharing", 1),
    ("ksm_pages_to_scan", "hvmem_host_ksm_pages_to_scan", "KSM pages_to_scan", 1),
    ("ksm_run", "hvmem_host_ksm_run", "KSM run (0 stopped, 1 merging, 2 unmerging)", 1),
    ("ksm_sleep_ms", "hvmem_host_ksm_sleep_seconds", "KSM sleep between wake-ups", 1e-3),
    ("psi_some_frac", "hvmem_host_memory_pressure_some_ratio",
     "PSI memory some avg10 of the host", 1),
    ("psi_full_frac", "hvmem_host_memory_pressure_full_ratio",
     "PSI memory full avg10 of the host", 1),
)
#: VM gauges beyond the esxtop columns: row key, metric name, help, factor.
VM_GAUGES = (
    ("cgroup_limit_mib", "hvmem_vm_cgroup_limit_bytes", "Memory-cgroup limit (NaN: none)",
     MIB_BYTES),
    ("qemu_rss_mib", "hvmem_vm_qemu_rss_bytes", "Resident memory of the VM's QEMU process",
     MIB_BYTES),
    ("cpu_frac", "hvmem_vm_cpu_ratio", "CPU share of the VM's QEMU process", 1),
    ("guest_available_mib", "hvmem_vm_guest_available_bytes",
     "Memory the guest could free easily (MemAvailable)", MIB_BYTES),
    ("balloon_stuck", "hvmem_vm_balloon_stuck",
     "1 while the balloon counts as stuck or gains nothing", 1),
    ("psi_some_frac", "hvmem_vm_memory_pressure_some_ratio",
     "PSI memory some avg10 of the guest's cgroup", 1),
)
STATES = ("high", "clear", "soft", "hard", "low")


def metric_name(column: str) -> str:
    """The Prometheus name of an esxtop column (``SWR/s`` -> ``hvmem_vm_swr_bytes_per_second``)."""
    if column.endswith("/s"):
        return f"hvmem_vm_{re.sub(r'[^a-z0-9]', '_', column[:-2].lower())}_bytes_per_second"
    return f"hvmem_vm_{re.sub(r'[^a-z0-9]', '_', column.lower())}_bytes"


class Metrics:
    """The gauges and counters, in a registry of their own.

    Args:
        columns: the esxtop VM columns to publish (ui/top.py ``COLUMNS``), all in
            MiB or MiB/s.
    """

    def __init__(self, columns: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.columns = tuple(columns)
        self.host = {key: (Gauge(name, doc, registry=self.registry), factor)
                     for key, name, doc, factor in HOST_GAUGES}
        self.state = Gauge("hvmem_host_state", "1 for the host's current memory state",
                           ["state"], registry=self.registry)
        self.vm = {c: (Gauge(metric_name(c), f"esxtop {c} of each VM", ["vm"],
                             registry=self.registry), MIB_BYTES) for c in self.columns}
        self.vm.update({key: (Gauge(name, doc, ["vm"], registry=self.registry), factor)
                        for key, name, doc, factor in VM_GAUGES})
        # Stays, at 0, when a VM leaves control: the one gauge that says so.
        self.up = Gauge("hvmem_vm_up", "1 while the guest is under control and answers, else 0",
                        ["vm"], registry=self.registry)
        self.decisions = Counter("hvmem_decisions", "Policy decisions applied",
                                 registry=self.registry)
        self.events = Counter("hvmem_events", "Backend events by kind", ["event"],
                              registry=self.registry)
        self._vms: set[str] = set()
        self._decisions = 0
        self._server = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        """Start the HTTP endpoint (``/metrics``) in a daemon thread."""
        self._server, _ = start_http_server(port, addr=addr, registry=self.registry)

    @property
    def port(self) -> int | None:
        """The port the endpoint listens on (None: not serving)."""
        return None if self._server is None else self._server.server_port

    def update(self, host_row: dict, vm_rows: list[dict], decisions: int,
               new_events: Iterable[dict]) -> None:
        """Publish one tick's rows."""
        for key, (gauge, factor) in self.host.items():
            # KSM's figures are -1 while hvmem does not drive KSM: no sample then.
            value = host_row.get(key)
            if value is not None and not (key.startswith("ksm_") and value < 0):
                gauge.set(value * factor)
        for state in STATES:
            self.state.labels(state=state).set(1.0 if host_row["state"] == state else 0.0)
        seen = set()
        for row in vm_rows:
            seen.add(row["vm"])
            for key, (gauge, factor) in self.vm.items():
                value = row.get(key)
                gauge.labels(vm=row["vm"]).set(math.nan if value is None else value * factor)
            self.up.labels(vm=row["vm"]).set(0.0 if row.get("stalled") else 1.0)
        for gone in self._vms - seen:
            for gauge, _ in self.vm.values():
                gauge.remove(gone)
            self.up.labels(vm=gone).set(0.0)
        self._vms = seen
        if decisions > self._decisions:
            self.decisions.inc(decisions - self._decisions)
            self._decisions = decisions
        for event in new_events:
            self.events.labels(event=event["event"]).inc()
            if event["event"] in ("guest_dropped", "attach_failed"):
                self.up.labels(vm=event["vm"]).set(0.0)

    def close(self) -> None:
        """Stop the endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
