"""A Prometheus endpoint with the counters of the live view and the results directory.

What it exposes
---------------
Every tick of ``hvmem qemu control`` records one host row and one row per VM
(control.py), the rows a simulated run records too. :class:`Metrics` publishes
the newest of them, through ``prometheus_client``, under the same names:

* ``hvmem_host_total_mib``, ``hvmem_host_free_mib``, ``hvmem_host_minfree_mib``,
  ``hvmem_host_shared_saved_mib``; ``hvmem_host_state{state=...}`` is 1 for the
  current memory state and 0 for the others;
* ``hvmem_vm_<column>`` with label ``vm`` for each esxtop column of the live
  view (ui/top.py ``COLUMNS``), sizes in MiB and rates in MiB/s: ``MEMSZ``
  becomes ``hvmem_vm_memsz_mib``, ``SWR/s`` ``hvmem_vm_swr_mib_per_second``;
  plus ``hvmem_vm_cpu_frac`` (the QEMU process's CPU share);
* ``hvmem_decisions_total`` and ``hvmem_events_total{event=...}``: counters;
* the controller's own state, named by Prometheus' conventions (``_bytes``,
  ``_seconds``, ``_ratio``): ``hvmem_vm_up`` (1 while the guest answers, 0 once
  it is stalled or dropped), ``hvmem_vm_cgroup_limit_bytes`` (+Inf unlimited),
  ``hvmem_vm_guest_available_bytes``, ``hvmem_vm_balloon_stuck``,
  ``hvmem_vm_memory_pressure_some_ratio`` and
  ``hvmem_host_memory_pressure_{some,full}_ratio`` (PSI avg10),
  ``hvmem_ksm_run``, ``hvmem_ksm_pages_to_scan``, ``hvmem_ksm_sleep_seconds``.

A VM that leaves control disappears from the gauges, except ``hvmem_vm_up``,
which drops to 0. The server binds to
127.0.0.1 unless told otherwise: the numbers describe the host's guests, which
is nothing to publish to a network by default.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

__all__ = ["Metrics", "metric_name"]

MIB = 1 << 20
_VM_CONTROL = (
    ("hvmem_vm_up", "1 while the guest is under control and answers, else 0"),
    ("hvmem_vm_cgroup_limit_bytes", "Memory-cgroup limit the controller set (+Inf: none)"),
    ("hvmem_vm_guest_available_bytes", "Memory the guest could free easily (MemAvailable)"),
    ("hvmem_vm_balloon_stuck", "1 while the balloon counts as stuck or gains nothing"),
    ("hvmem_vm_memory_pressure_some_ratio", "PSI memory some avg10 of the guest's cgroup"),
)
_HOST_CONTROL = (
    ("hvmem_host_memory_pressure_some_ratio", "PSI memory some avg10 of the host"),
    ("hvmem_host_memory_pressure_full_ratio", "PSI memory full avg10 of the host"),
    ("hvmem_ksm_run", "KSM run setting (0 stop, 1 run, 2 unmerge)"),
    ("hvmem_ksm_pages_to_scan", "KSM pages scanned per wake-up"),
    ("hvmem_ksm_sleep_seconds", "KSM sleep between wake-ups"),
)
HOST_FIELDS = ("total_mib", "free_mib", "minfree_mib", "shared_saved_mib")
STATES = ("high", "clear", "soft", "hard", "low")


def metric_name(column: str) -> str:
    """The Prometheus name of an esxtop column (``SWR/s`` -> ``hvmem_vm_swr_mib_per_second``)."""
    if column.endswith("/s"):
        return f"hvmem_vm_{re.sub(r'[^a-z0-9]', '_', column[:-2].lower())}_mib_per_second"
    return f"hvmem_vm_{re.sub(r'[^a-z0-9]', '_', column.lower())}_mib"


class Metrics:
    """The gauges and counters, in a registry of their own.

    Args:
        columns: the VM columns to publish (ui/top.py ``COLUMNS``).
    """

    def __init__(self, columns: Iterable[str]) -> None:
        self.registry = CollectorRegistry()
        self.columns = tuple(columns)
        self.host = {f: Gauge(f"hvmem_host_{f}", f"Host {f.replace('_', ' ')}",
                              registry=self.registry) for f in HOST_FIELDS}
        self.state = Gauge("hvmem_host_state", "1 for the host's current memory state",
                           ["state"], registry=self.registry)
        self.vm = {c: Gauge(metric_name(c), f"esxtop {c} of each VM", ["vm"],
                            registry=self.registry) for c in self.columns}
        self.throughput = Gauge("hvmem_vm_cpu_frac", "CPU share of the VM's QEMU process",
                                ["vm"], registry=self.registry)
        self.decisions = Counter("hvmem_decisions", "Policy decisions applied",
                                 registry=self.registry)
        self.events = Counter("hvmem_events", "Backend events by kind", ["event"],
                              registry=self.registry)
        self.control = {name: Gauge(name, text, ["vm"], registry=self.registry)
                        for name, text in _VM_CONTROL}
        self.host_control = {name: Gauge(name, text, registry=self.registry)
                             for name, text in _HOST_CONTROL}
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
        for f in HOST_FIELDS:
            if f in host_row:
                self.host[f].set(host_row[f])
        for state in STATES:
            self.state.labels(state=state).set(1.0 if host_row["state"] == state else 0.0)
        seen = set()
        for row in vm_rows:
            seen.add(row["vm"])
            for c in self.columns:
                self.vm[c].labels(vm=row["vm"]).set(row[c])
            self.throughput.labels(vm=row["vm"]).set(row["cpu_frac"])
        self._control(host_row, vm_rows)
        for gone in self._vms - seen:
            for gauge in (*self.vm.values(), self.throughput):
                gauge.remove(gone)
            for name, gauge in self.control.items():
                if name == "hvmem_vm_up":
                    gauge.labels(vm=gone).set(0.0)
                else:
                    gauge.remove(gone)
        self._vms = seen
        if decisions > self._decisions:
            self.decisions.inc(decisions - self._decisions)
            self._decisions = decisions
        for event in new_events:
            self.events.labels(event=event["event"]).inc()
            if event["event"] in ("guest_dropped", "attach_failed"):
                self.control["hvmem_vm_up"].labels(vm=event["vm"]).set(0.0)

    def _control(self, host_row: dict, vm_rows: list[dict]) -> None:
        """The controller's own gauges (module docs)."""
        for row in vm_rows:
            vm = row["vm"]
            limit = row.get("cgroup_limit_mib", math.nan)
            values = {
                "hvmem_vm_up": 0.0 if row.get("stalled") else 1.0,
                "hvmem_vm_cgroup_limit_bytes": math.inf if math.isnan(limit) else limit * MIB,
                "hvmem_vm_guest_available_bytes": row.get("guest_available_mib", math.nan)
                * MIB,
                "hvmem_vm_balloon_stuck": float(bool(row.get("balloon_stuck"))),
                "hvmem_vm_memory_pressure_some_ratio": row.get("psi_some_frac", math.nan),
            }
            for name, value in values.items():
                self.control[name].labels(vm=vm).set(value)
        ksm_sleep = host_row.get("ksm_sleep_ms", -1)
        for name, value in (
                ("hvmem_host_memory_pressure_some_ratio", host_row.get("psi_some_frac")),
                ("hvmem_host_memory_pressure_full_ratio", host_row.get("psi_full_frac")),
                ("hvmem_ksm_run", host_row.get("ksm_run")),
                ("hvmem_ksm_pages_to_scan", host_row.get("ksm_pages_to_scan")),
                ("hvmem_ksm_sleep_seconds", ksm_sleep / 1000 if ksm_sleep >= 0 else None)):
            self.host_control[name].set(math.nan if value is None or value == -1 else value)

    def close(self) -> None:
        """Stop the endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
