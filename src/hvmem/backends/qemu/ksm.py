"""KSM as the host's page sharing: read its counters, tune it by host state, restore it.

What is modelled
----------------
Kernel samepage merging is Linux's transparent page sharing: ``ksmd`` scans
memory that QEMU marked mergeable (guest RAM with ``mem-merge=on``), merges
identical pages into one copy-on-write page, and reports in
``/sys/kernel/mm/ksm``:

* ``pages_shared``: KSM pages in use (the one copy each);
* ``pages_sharing``: further mappings of them, i.e. pages *saved* (ESX's
  SHRDSVD summed over the host);
* ``run`` (0 stop, 1 scan, 2 stop and unmerge everything), ``pages_to_scan``
  per wake-up and ``sleep_millisecs`` between wake-ups: the scan rate.

ESX keeps page sharing running always and scans harder as free memory falls
(ESXi 6's CLEAR state "calls TPS actively", policy/states.py); MOM's KSM rule
raises ``pages_to_scan`` as host free memory drops [MOM]. This
backend does the same: the policy's :class:`~hvmem.policy.samples.HostPlan`
says run/stop/unmerge and may give the scan rate; where it leaves the rate to
the backend, :data:`SCAN_BY_STATE` picks it from the host state. The top rate,
5000 pages every 20 ms, is the one that merged two identical guests' 78k pages
within 2 s [QEMU-PROBE]; the lowest, 100 pages every 20 ms, is the
kernel's default [LINUX-KSM].

Restoring: :meth:`Ksm.save` records ``run``, ``pages_to_scan`` and
``sleep_millisecs`` the first time the backend changes anything, and
:meth:`Ksm.restore` writes them back. Restoring does not unmerge: guests that
keep running keep their shared pages (writing ``run=2`` would make every merged
page private again at once, a sudden demand of hundreds of MiB). With the
guests gone, :meth:`Ksm.reset_counters` writes ``2`` and then the original
``run``, which clears stale counters [QEMU-PROBE].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from hvmem.errors import BackendError
from hvmem.policy.samples import HostPlan, SharingMode
from hvmem.policy.states import MemState

__all__ = ["DEFAULT_KSM_DIR", "SCAN_BY_STATE", "Ksm", "KsmCounters"]

DEFAULT_KSM_DIR = Path("/sys/kernel/mm/ksm")

#: (pages_to_scan, sleep_millisecs) by host memory state, when the plan leaves them open.
SCAN_BY_STATE: Mapping[MemState, tuple[int, int]] = MappingProxyType({
    MemState.HIGH: (100, 20),
    MemState.CLEAR: (1000, 20),
    MemState.SOFT: (2000, 20),
    MemState.HARD: (5000, 20),
    MemState.LOW: (5000, 20),
})

_RUN_VALUE = {SharingMode.RUN: 1, SharingMode.STOP: 0, SharingMode.UNMERGE: 2}
_SETTINGS = ("run", "pages_to_scan", "sleep_millisecs")


@dataclass(frozen=True, slots=True)
class KsmCounters:
    """One reading of the KSM counters."""

    run: int
    pages_to_scan: int
    sleep_millisecs: int
    pages_shared: int
    pages_sharing: int
    full_scans: int

    @property
    def saved_mib(self) -> float:
        """Memory saved host-wide: ``pages_sharing`` x 4 KiB."""
        return self.pages_sharing * 4 / 1024


class Ksm:
    """The KSM sysfs directory, read and tuned.

    Args:
        root: the KSM directory (``/sys/kernel/mm/ksm``; tests use a copy).

    Attributes:
        original: the settings before the first change (None until then).
        writes: settings written (an event count).
    """

    def __init__(self, root: Path = DEFAULT_KSM_DIR) -> None:
        self.root = Path(root)
        self.original: dict[str, int] | None = None
        self.writes = 0

    @property
    def available(self) -> bool:
        """Whether the kernel has KSM (the directory and its ``run`` file exist)."""
        return (self.root / "run").is_file()

    def _read(self, name: str) -> int:
        try:
            return int((self.root / name).read_text().split()[0])
        except FileNotFoundError:
            return 0
        except (OSError, ValueError, IndexError) as err:
            raise BackendError(f"{self.root / name}: cannot read KSM counter ({err})") from None

    def _write(self, name: str, value: int) -> None:
        if self._read(name) == value:
            return
        try:
            (self.root / name).write_text(f"{value}\n")
        except OSError as err:
            raise BackendError(f"{self.root / name}: cannot write {value} "
                               f"({err.strerror}; KSM needs root)") from None
        self.writes += 1

    def counters(self) -> KsmCounters:
        """Read the settings and counters now."""
        return KsmCounters(*(self._read(n) for n in (*_SETTINGS, "pages_shared",
                                                     "pages_sharing", "full_scans")))

    def save(self) -> None:
        """Remember the current settings (once; later calls keep the first copy)."""
        if self.original is None:
            self.original = {name: self._read(name) for name in _SETTINGS}

    def apply(self, plan: HostPlan, state: MemState) -> tuple[int, int, int]:
        """Carry out a host plan's sharing part; returns (run, pages_to_scan, sleep_ms).

        ``plan.sharing`` None leaves KSM as it is.
        """
        if plan.sharing is None:
            c = self.counters()
            return c.run, c.pages_to_scan, c.sleep_millisecs
        self.save()
        default_pages, default_sleep = SCAN_BY_STATE.get(state, SCAN_BY_STATE[MemState.HIGH])
        pages = plan.scan_pages if plan.scan_pages is not None else default_pages
        sleep = (round(plan.scan_sleep_ms) if plan.scan_sleep_ms is not None
                 else default_sleep)
        run = _RUN_VALUE[plan.sharing]
        if run == 1:
            self._write("pages_to_scan", max(1, int(pages)))
            self._write("sleep_millisecs", max(0, int(sleep)))
        self._write("run", run)
        return run, pages, sleep

    def restore(self) -> None:
        """Write back the settings saved by :meth:`save` (no unmerge; see the module docs)."""
        if self.original is None:
            return
        for name in ("pages_to_scan", "sleep_millisecs", "run"):
            self._write(name, self.original[name])

    def reset_counters(self) -> None:
        """Unmerge (``run=2``), then put ``run`` back: clears stale counters."""
        run = self.original["run"] if self.original is not None else self._read("run")
        try:
            (self.root / "run").write_text("2\n")
        except OSError as err:
            raise BackendError(f"{self.root / 'run'}: cannot write 2 ({err.strerror})") from None
        self._write("run", run)
