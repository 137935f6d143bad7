"""Where a launched guest's QEMU runs: a systemd scope, or a cgroup directory hvmem makes.

Why
---
A guest's QEMU is limited through a cgroup that holds it alone (hypervisor
swapping, swap_limit.py) and its memory stalls are read there (PSI). So the
launcher gives every guest a cgroup of its own, entered before QEMU is
executed, so that all of QEMU's memory is charged to it:

* Where systemd runs (``/run/systemd/system`` is a directory, the test of
  ``sd_booted()``) and ``systemd-run`` is installed: a transient scope
  ``hvmem-TAG-NAME.scope``, by ``systemd-run --scope --collect -p
  MemoryAccounting=yes -- qemu...``. systemd owns the cgroup tree there, and a
  directory made behind its back may be moved or emptied by it; a scope is
  systemd's own way of placing a process it did not start. ``systemd-run
  --scope`` was chosen over calling ``StartTransientUnit`` on D-Bus because it
  needs no D-Bus binding in hvmem, waits for the job to finish before it
  executes QEMU, and fails in one line where the manager cannot be reached. The
  daemonized QEMU stays in the scope, and systemd removes the scope when its
  last process exits (``--collect``: even after a failure), so there is nothing
  for hvmem to undo. hvmem writes the limits into the scope's memory cgroup
  files itself, as anywhere else.
* Elsewhere: a directory ``hvmem-TAG-NAME`` under the launcher's own memory
  cgroup (cgroups.py ``create_cgroup``), and on a hybrid host a second one in
  the unified hierarchy for PSI (cgroups.py ``create_pressure_cgroup``). Each
  directory is written to the launch's state file (state_file.py
  ``CgroupRecord``, ``/run/hvmem/launch-PID.json``) *before* it is made;
  ``hvmem qemu stop`` removes it, and after a crash ``hvmem qemu restore`` (or
  the next controller) removes each recorded one that is empty: a cgroup still
  holding its QEMU is that guest's, and stays while it runs.

A file-backed guest needs its memory cgroup (its swapping is the limit): a
cgroup that cannot be made is an error. Any other guest gets one where it can be
made and runs without elsewhere (not root, no memory controller); it then
cannot be limited, which with anonymous RAM on a swapless host it must not be
anyway.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hvmem.backends.qemu.cgroups import (
    DEFAULT_CGROUP_ROOT,
    MemoryCgroup,
    create_cgroup,
    create_pressure_cgroup,
    memory_cgroup_of,
    new_cgroup_path,
    new_pressure_path,
)
from hvmem.backends.qemu.state_file import CgroupRecord
from hvmem.errors import BackendError

__all__ = ["Placement", "place", "scope_prefix", "settle", "systemd_running"]

#: systemd's own test for "booted with systemd" (sd_booted(3)).
SYSTEMD_RUN_DIR = Path("/run/systemd/system")


def systemd_running(run_dir: Path = SYSTEMD_RUN_DIR) -> bool:
    """Whether systemd manages this host and ``systemd-run`` is there to ask it."""
    return run_dir.is_dir() and shutil.which("systemd-run") is not None


def scope_prefix(unit: str) -> list[str]:
    """The command that runs what follows it in a new transient scope ``unit``."""
    return ["systemd-run", "--scope", "--quiet", "--collect", f"--unit={unit}",
            "--description=hvmem guest", "-p", "MemoryAccounting=yes", "--"]


@dataclass
class Placement:
    """Where one guest's QEMU goes (module docs).

    Attributes:
        scope: the systemd scope unit (None: not a scope).
        cgroup: the memory cgroup hvmem made (None: none, or a scope's, known
            only once QEMU runs: :func:`settle`).
        psi_cgroup: the unified-hierarchy cgroup hvmem made for PSI (None: none).
        prefix: what goes before QEMU's command line.
        why: why the guest has no cgroup of its own, where it has none.
    """

    scope: str | None = None
    cgroup: MemoryCgroup | None = None
    psi_cgroup: Path | None = None
    prefix: list[str] = field(default_factory=list)
    why: str | None = None


def place(name: str, file_backed: bool, record: CgroupRecord | None,
          cgroup_root: Path = DEFAULT_CGROUP_ROOT, use_systemd: bool | None = None,
          proc: Path = Path("/proc")) -> Placement:
    """Choose and make the cgroup of guest ``name`` (``hvmem-TAG-NAME``), before QEMU runs.

    Args:
        name: the cgroup's (or the scope's) name.
        file_backed: the guest's RAM is a file: a memory cgroup is required.
        record: where each directory is written before it is made (None:
            made without a record).
        cgroup_root: the cgroup mounts (``/sys/fs/cgroup``).
        use_systemd: a scope (True), a directory (False); None: a scope where
            systemd runs.
        proc: the /proc root (this process's own cgroup is the parent).

    Raises:
        BackendError: a file-backed guest's memory cgroup cannot be made, or the
            state file cannot be written first.
    """
    if use_systemd is None:
        use_systemd = systemd_running() and cgroup_root == DEFAULT_CGROUP_ROOT
    if use_systemd:
        unit = f"{name}.scope"
        return Placement(scope=unit, prefix=scope_prefix(unit))
    placement = Placement()
    try:
        placement.cgroup = _made(name, record, cgroup_root, proc)
    except BackendError as err:
        if file_backed:
            raise
        placement.why = str(err)
    psi = new_pressure_path(name, cgroup_root, proc)
    if psi is None:
        return placement
    try:
        if record is not None:
            record.add(psi)
    except BackendError:
        return placement  # PSI unread for this guest, nothing worse
    placement.psi_cgroup = create_pressure_cgroup(name, cgroup_root, proc)
    if placement.psi_cgroup is None and record is not None:
        record.forget(psi)
    return placement


def _made(name: str, record: CgroupRecord | None, cgroup_root: Path,
          proc: Path) -> MemoryCgroup:
    if record is None:
        return create_cgroup(name, cgroup_root, proc)
    # Recorded before it exists: a crash right after the mkdir still leaves a record.
    target, _ = new_cgroup_path(name, cgroup_root, proc)
    record.add(target)
    try:
        return create_cgroup(name, cgroup_root, proc)
    except BackendError:
        record.forget(target)
        raise


def settle(placement: Placement, pid: int | None, cgroup_root: Path = DEFAULT_CGROUP_ROOT,
           proc: Path = Path("/proc")) -> MemoryCgroup | None:
    """The guest's memory cgroup once QEMU runs: the one made, or its scope's."""
    if placement.scope is None or pid is None:
        return placement.cgroup
    return memory_cgroup_of(pid, cgroup_root, proc)
