"""cgroup v2 memory control: ``memory.high``, ``memory.max``, ``memory.reclaim``, swap limits.

Which hierarchy
---------------
Linux mounts memory cgroups in one of three ways, and :func:`hierarchy` tells
which one a host has:

* ``v1``: the memory controller in a v1 hierarchy of its own
  (``/sys/fs/cgroup/memory``), and no unified hierarchy;
* ``hybrid``: the memory controller still in v1, and a cgroup2 mount beside it
  (``/sys/fs/cgroup/unified``, systemd's "hybrid" layout) holding no memory
  controller: its cgroups still have a ``memory.pressure`` [LINUX-PSI], which is
  what the launcher uses it for (cgroups.py ``create_pressure_cgroup``);
* ``v2``: ``memory`` listed in the unified hierarchy's ``cgroup.controllers``
  (``/sys/fs/cgroup`` itself, or ``/sys/fs/cgroup/unified``).

A controller lives in one hierarchy at a time: while v1 holds ``memory``, a
second cgroup2 mount cannot have it, so a hybrid host offers no v2 memory
control (this kind of machine is one).

Hypervisor swapping on v2
-------------------------
v1 has one knob, ``memory.limit_in_bytes``, and reclaims inside the write. v2
splits it ([LINUX-CGROUP2], "Memory Interface Files"): ``memory.high`` throttles
a cgroup over it and puts it under reclaim but never invokes the OOM killer;
``memory.max`` is the hard limit, where a cgroup whose memory cannot be
reclaimed has a process OOM-killed. So :func:`hold` swaps a guest out in three
steps:

1. ``memory.reclaim`` (Linux 5.19 and later), where the kernel has it: asks the
   kernel to reclaim that many bytes of the cgroup now, without changing any
   limit; it answers ``EAGAIN`` when it reclaimed less [LINUX-CGROUP2].
   What it freed is read back from ``memory.current``.
2. ``memory.high`` at the new limit: what the cgroup holds stays there, the
   guest's touches beyond it are paid for by reclaiming its own pages (ESX's
   swap-in and swap-out of a VM above its target).
3. ``memory.max`` :data:`MAX_ABOVE_HIGH_MIB` above it, or above what the
   cgroup still holds where reclaim could not get it down to ``high``: the
   backstop for a burst that outruns reclaim at ``high``. Set after ``high``
   and never below the usage, so the write of ``max`` has nothing to reclaim
   and never meets the OOM killer on the way down.

Undo writes the original ``memory.max`` first and then ``memory.high``
(:func:`set_limits`).

Swap space
----------
For a guest whose RAM is anonymous, swapped pages go to the host's swap, and
``memory.swap.max`` caps how much of it the cgroup may use: "anonymous memory
of the cgroup will not be swapped out" past it [LINUX-CGROUP2].
:func:`swap_room_mib` is what is left (``memory.swap.max - memory.swap.current``),
and swap_limit.py never plans to swap out more than that; a limit that needs
more would only end in the OOM killer at ``memory.max``. File-backed guest RAM
pages to its own file, which no swap limit covers.

What is read
------------
``memory.current`` (usage), ``memory.stat`` (``workingset_refault_*``, the
pages read back: sampling.py), ``memory.events`` (how often the cgroup went
over ``high``, hit ``max``, met the OOM killer: :func:`events`) and
``memory.pressure`` (procfs.py), as the v1 path reads ``memory.usage_in_bytes``,
``memory.stat`` and ``memory.failcnt``.

Every write goes through :data:`write` (one line, ``OSError`` on a refusal),
which the tests replace with a model of the kernel's answers.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "MAX_ABOVE_HIGH_MIB",
    "Hierarchy",
    "Held",
    "events",
    "has_reclaim",
    "hierarchy",
    "hold",
    "limits",
    "reclaim",
    "set_limits",
    "swap_room_mib",
]

MIB = 1 << 20
#: How far ``memory.max`` sits above ``memory.high`` while a guest is held (MiB):
#: room for a burst that reclaim at ``high`` has not caught up with.
MAX_ABOVE_HIGH_MIB = 64.0
# v2 keys whose presence in memory.events is guaranteed since Linux 4.13.
_EVENT_KEYS = ("low", "high", "max", "oom", "oom_kill")


def _write_file(path: Path, text: str) -> None:
    path.write_text(text + "\n")


#: Writes one value to a cgroup file (tests put a model of the kernel here).
write: Callable[[Path, str], None] = _write_file


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """How memory cgroups are mounted on a host (module docs).

    Attributes:
        kind: ``"v1"``, ``"hybrid"``, ``"v2"`` or ``"none"``.
        memory: where the memory controller's hierarchy is mounted (None: none).
        unified: the cgroup2 mount (None: none).
        why: one line for a person: what was found.
    """

    kind: str
    memory: Path | None
    unified: Path | None
    why: str


def _controllers(mount: Path) -> list[str] | None:
    try:
        return (mount / "cgroup.controllers").read_text().split()
    except OSError:
        return None


def hierarchy(root: Path) -> Hierarchy:
    """The memory-cgroup layout under ``root`` (``/sys/fs/cgroup``)."""
    unified = None
    unified_controllers: list[str] = []
    for candidate in (root, root / "unified"):
        found = _controllers(candidate)
        if found is not None:
            unified, unified_controllers = candidate, found
            break
    if unified is not None and "memory" in unified_controllers:
        return Hierarchy("v2", unified, unified, f"{unified}: cgroup v2 with the memory "
                         "controller")
    v1 = root / "memory"
    if (v1 / "memory.limit_in_bytes").is_file():
        if unified is not None:
            listed = " ".join(unified_controllers) or "no controllers"
            return Hierarchy("hybrid", v1, unified, f"memory controller on cgroup v1 ({v1}); "
                             f"cgroup v2 at {unified} has {listed}")
        return Hierarchy("v1", v1, None, f"memory controller on cgroup v1 ({v1})")
    if unified is not None:
        return Hierarchy("none", None, unified, f"{unified}: cgroup v2 without the memory "
                         "controller, and no v1 memory hierarchy")
    return Hierarchy("none", None, None, f"{root}: no cgroup hierarchy mounted")


def _read(path: Path) -> str:
    return path.read_text().strip()


def _mib(text: str) -> float | None:
    return None if text == "max" else int(text) / MIB


def _bytes(mib: float | None) -> str:
    return "max" if mib is None else str(int(mib * MIB) // 4096 * 4096)


def limits(cgroup: Path) -> tuple[float | None, float | None]:
    """(``memory.max``, ``memory.high``) in MiB, None where ``max`` (unlimited)."""
    return _mib(_read(cgroup / "memory.max")), _mib(_read(cgroup / "memory.high"))


def set_limits(cgroup: Path, max_mib: float | None, high_mib: float | None) -> None:
    """Write ``memory.max`` and then ``memory.high`` (None: ``max``).

    Raises:
        OSError: the kernel refused a value.
    """
    write(cgroup / "memory.max", _bytes(max_mib))
    write(cgroup / "memory.high", _bytes(high_mib))


def events(cgroup: Path) -> dict[str, int]:
    """``memory.events``: times over ``high``, at ``max``, ``oom``, ``oom_kill``..."""
    out = dict.fromkeys(_EVENT_KEYS, 0)
    for line in _read(cgroup / "memory.events").splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def has_reclaim(cgroup: Path) -> bool:
    """Whether the kernel offers ``memory.reclaim`` (Linux 5.19 and later)."""
    return (cgroup / "memory.reclaim").exists()


def swap_room_mib(cgroup: Path) -> float | None:
    """Swap the cgroup may still use (MiB): ``memory.swap.max`` less ``memory.swap.current``.

    None where swap is not limited for it (``max``, or a kernel without swap
    accounting, which has no ``memory.swap.max``).
    """
    try:
        cap = _mib(_read(cgroup / "memory.swap.max"))
    except OSError:
        return None
    if cap is None:
        return None
    try:
        used = int(_read(cgroup / "memory.swap.current")) / MIB
    except (OSError, ValueError):
        used = 0.0
    return max(0.0, cap - used)


def reclaim(cgroup: Path, mib: float) -> bool:
    """Ask the kernel to reclaim ``mib`` of the cgroup now; False if it reclaimed less.

    Raises:
        OSError: the write failed for another reason than ``EAGAIN``.
    """
    try:
        write(cgroup / "memory.reclaim", str(int(mib * MIB) // 4096 * 4096))
    except OSError as err:
        if err.errno == errno.EAGAIN:
            return False
        raise
    return True


@dataclass(frozen=True, slots=True)
class Held:
    """What :func:`hold` did, for the event that reports it (MiB)."""

    usage_before_mib: float
    usage_after_mib: float
    high_mib: float
    max_mib: float
    reclaimed: str  # "all", "less" (EAGAIN) or "none" (no memory.reclaim, or nothing asked)

    def describe(self) -> str:
        """One line: memory.high and memory.max set, and what memory.reclaim did."""
        how = {"all": "memory.reclaim freed it", "less": "memory.reclaim freed less "
               "(EAGAIN)", "none": "no memory.reclaim"}[self.reclaimed]
        return (f"memory.high {self.high_mib:.0f} MiB, memory.max {self.max_mib:.0f} MiB "
                f"(usage {self.usage_before_mib:.0f} -> {self.usage_after_mib:.0f} MiB; "
                f"{how})")


def hold(cgroup: Path, limit_mib: float, reclaim_mib: float,
         max_cap_mib: float | None = None) -> Held:
    """Swap ``reclaim_mib`` out now where the kernel can, and hold the cgroup at ``limit_mib``.

    The three steps of the module docs: ``memory.reclaim``, then ``memory.high``
    at ``limit_mib``, then ``memory.max`` :data:`MAX_ABOVE_HIGH_MIB` above it,
    but never above ``max_cap_mib`` (the cgroup's own ``memory.max`` before
    hvmem held it: a limit an operator set is never raised).

    Raises:
        OSError: the kernel refused a write (other than ``memory.reclaim``'s EAGAIN).
    """
    before = int(_read(cgroup / "memory.current")) / MIB
    done = "none"
    if reclaim_mib >= 1.0 and has_reclaim(cgroup):
        done = "all" if reclaim(cgroup, reclaim_mib) else "less"
    high = limit_mib
    write(cgroup / "memory.high", _bytes(high))
    # Where reclaim could not get down to high, max stays the margin above what is
    # there: a max below the usage would have the kernel OOM-kill QEMU.
    after = int(_read(cgroup / "memory.current")) / MIB
    ceiling = max(limit_mib, after) + MAX_ABOVE_HIGH_MIB
    if max_cap_mib is not None:
        ceiling = max(limit_mib, min(ceiling, max_cap_mib))
    write(cgroup / "memory.max", _bytes(ceiling))
    return Held(before, after, high, ceiling, done)
