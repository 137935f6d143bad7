"""Starting and stopping small QEMU guests for the controller: command lines, KVM or TCG.

What it does
------------
:func:`launch` starts N guests from the cached image (guest_image.py), each a
daemonized ``qemu-system-x86_64`` with:

* a QMP socket (``-qmp unix:PATH,server=on,wait=off``) and a pid file, and a
  second QMP monitor for operators (``NAME.op.qmp``): a QMP socket serves one
  client at a time, and the controller keeps its connection open, so without a
  second monitor an operator's ``qmp-shell`` would wait until the controller
  exits;
* ``virtio-balloon-pci`` with ``deflate-on-oom=on`` (over-inflation stalls the
  balloon instead of panicking the guest) and ``free-page-reporting=on`` (freed
  guest memory goes back to the host within seconds: RSS fell from 502 to
  208 MiB within 6 s [QEMU-PROBE]);
* the serial console in a log file (the workload's markers, the checksums);
* ``-no-reboot`` and ``panic=-1``, so a guest that panics exits instead of hanging;
* QEMU in a cgroup of its own, entered before exec so that all of QEMU's
  memory is charged to it (cgroup_place.py): a systemd scope where systemd
  runs, else a memory cgroup directory ``hvmem-...-NAME`` that hvmem records
  in a state file, makes, and :func:`stop` removes; where memory cgroups are
  v1 and the unified hierarchy is mounted beside them, a unified cgroup of its
  own too, whose ``memory.pressure`` counts the guest's memory stalls apart
  from the host's (cgroups.py ``create_pressure_cgroup``);
* with ``file_backed``: guest RAM as ``memory-backend-file,share=on`` on a disk
  file (the VM's swap file, ``NAME.vswp``), which the host swaps by limiting
  that cgroup (the launch fails where it cannot be made). Such a guest can be
  swapped by the host but not shared by KSM (41 pages merged [QEMU-PROBE]): a
  VM gets one or the other;

The launch writes ``guests.toml`` in the run directory, which
``hvmem qemu control --config`` and :func:`stop` read.

Accelerator
-----------
KVM is used only where it really works: ``/dev/kvm`` is writable *and*
``kvm_intel`` or ``kvm_amd`` is loaded, or the CPU flags show ``vmx``/``svm``.
``/dev/kvm`` alone is not enough: on hosts that are themselves guests it may
come from ``kvm_pvm`` (a paravirtual scheme for PVM-aware kernels), where a
stock kernel runs about 1000 times slower than under TCG and then stops with a
KVM internal error, and QEMU's own ``-accel kvm -accel tcg`` fallback still
picks KVM because opening it succeeds [QEMU-PROBE]. Everywhere else
the guests run under TCG, which boots this guest in about 5 s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hvmem.backends.qemu.cgroup_place import place, settle
from hvmem.backends.qemu.cgroups import DEFAULT_CGROUP_ROOT, MemoryCgroup, on_tmpfs
from hvmem.backends.qemu.guest_image import GuestImage, WorkloadParams
from hvmem.backends.qemu.qmp import QmpClient
from hvmem.backends.qemu.state_file import CgroupRecord, default_state_dir, prune_launch_records
from hvmem.errors import BackendError, ConfigError
from hvmem.scenario.toml_file import read_toml

__all__ = [
    "GUESTS_FILE",
    "LaunchedGuest",
    "choose_accel",
    "launch",
    "missing_tools",
    "qemu_command",
    "read_guests_file",
    "stop",
    "wait_for_marker",
]

GUESTS_FILE = "guests.toml"
#: The operators' QMP socket of guest NAME is NAME + this, beside the controller's.
OPERATOR_QMP = ".op.qmp"
QEMU_BINARY = "qemu-system-x86_64"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Unix socket paths must fit in sockaddr_un.sun_path (108 bytes with the NUL).
_MAX_SOCKET_PATH = 107


@dataclass(frozen=True, slots=True)
class LaunchedGuest:
    """One running guest and the files that belong to it."""

    name: str
    qmp: Path
    pid_file: Path
    serial_log: Path
    memory_mib: int
    ram_file: Path | None = None
    cgroup: Path | None = None
    accel: str = "tcg"
    fallback: str | None = None  # why KVM was given up for TCG, if it was
    scope: str | None = None  # the systemd scope QEMU runs in (systemd removes it)

    @property
    def operator_qmp(self) -> Path:
        """The second QMP monitor, for operators while the controller holds the first."""
        return self.qmp.with_name(self.qmp.stem + OPERATOR_QMP)

    @property
    def pid(self) -> int | None:
        """QEMU's pid, from its pid file (None: not there)."""
        try:
            return int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def missing_tools() -> str | None:
    """What this machine lacks to build and run the guests (None: nothing)."""
    import shutil

    if shutil.which(QEMU_BINARY) is None:
        return f"{QEMU_BINARY} not found"
    if not any(p.is_file() for p in (Path("/bin/busybox"), Path("/usr/bin/busybox"))):
        return "busybox not found"
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return "no apt-get/dpkg to fetch the Debian guest kernel"
    return None


def require_tools() -> None:
    """Fail early, in one line, where the guests cannot be built or run.

    Raises:
        BackendError: what is missing, and the packages that bring it.
    """
    why = missing_tools()
    if why is not None:
        raise BackendError(f"{why}: the QEMU backend needs qemu-system-x86 and busybox-static "
                         "(Debian: apt-get install qemu-system-x86 busybox-static)")


def choose_accel(dev_kvm: Path = Path("/dev/kvm"), sys_module: Path = Path("/sys/module"),
                 cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, str]:
    """``("kvm" | "tcg", why)``: KVM only where hardware virtualization backs it."""
    if not (dev_kvm.exists() and os.access(dev_kvm, os.R_OK | os.W_OK)):
        return "tcg", f"{dev_kvm} is missing or not writable"
    for module in ("kvm_intel", "kvm_amd"):
        if (sys_module / module).is_dir():
            return "kvm", f"{module} is loaded"
    try:
        flags = set()
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                flags.update(line.partition(":")[2].split())
    except OSError:
        flags = set()
    if flags & {"vmx", "svm"}:
        return "kvm", "the CPU has " + "/".join(sorted(flags & {"vmx", "svm"}))
    others = [m.name for m in sys_module.glob("kvm_*")] if sys_module.is_dir() else []
    extra = f" ({', '.join(sorted(others))} is not hardware KVM)" if others else ""
    return "tcg", f"{dev_kvm} exists but neither kvm_intel nor kvm_amd is loaded and the " \
                  f"CPU has no vmx/svm{extra}"


def qemu_command(name: str, image: GuestImage, memory_mib: int, run_dir: Path,
                 workload: WorkloadParams, accel: str = "tcg",
                 ram_file: Path | None = None) -> list[str]:
    """The QEMU command line of one guest (daemonized; see the module docs)."""
    machine = "pc,memory-backend=m0" if ram_file is not None else "pc,mem-merge=on"
    argv = [
        QEMU_BINARY, "-name", name, "-accel", accel, "-machine", machine,
        "-m", f"{memory_mib}M", "-smp", "1", "-nodefaults", "-no-user-config",
        "-display", "none", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initramfs),
        "-append", f"console=ttyS0 panic=-1 quiet {workload.kernel_args()}",
        "-serial", f"file:{run_dir / (name + '.log')}",
        "-device", "virtio-balloon-pci,id=balloon0,deflate-on-oom=on,free-page-reporting=on",
        "-qmp", f"unix:{run_dir / (name + '.qmp')},server=on,wait=off",
        "-qmp", f"unix:{run_dir / (name + OPERATOR_QMP)},server=on,wait=off",
        "-pidfile", str(run_dir / (name + ".pid")), "-daemonize",
    ]
    if ram_file is not None:
        argv += ["-object", f"memory-backend-file,id=m0,size={memory_mib}M,"
                            f"mem-path={ram_file},share=on"]
    return argv


def _guests_toml(guests: list[LaunchedGuest], accel: str, host_memory_mib: float | None) -> str:
    def q(value: object) -> str:
        return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = ["# Guests started by hvmem qemu launch; read by hvmem qemu control --config",
             "# and hvmem qemu stop.", f"accel = {q(accel)}", ""]
    if host_memory_mib is not None:
        lines += ["[host]", f"memory = {q(f'{host_memory_mib:g}MiB')}", ""]
    for g in guests:
        lines += ["[[guest]]", f"name = {q(g.name)}", f"qmp = {q(g.qmp)}",
                  f"operator_qmp = {q(g.operator_qmp)}",
                  f"pid_file = {q(g.pid_file)}", f"serial_log = {q(g.serial_log)}",
                  f"memory = {q(f'{g.memory_mib}MiB')}"]
        if g.ram_file is not None:
            lines.append(f"ram_file = {q(g.ram_file)}")
        if g.cgroup is not None:
            lines.append(f"cgroup = {q(g.cgroup)}")
        if g.scope is not None:
            lines.append(f"scope = {q(g.scope)}")
        lines.append("")
    return "\n".join(lines)


def launch(image: GuestImage, run_dir: Path, count: int = 2, memory_mib: int = 384,
           workload: WorkloadParams | None = None, file_backed: bool = False,
           swap_dir: Path | None = None, prefix: str = "vm", accel: str | None = None,
           host_memory_mib: float | None = None,
           cgroup_root: Path = DEFAULT_CGROUP_ROOT,
           die_with_parent: bool = False, names: list[str] | None = None,
           memories_mib: list[int] | None = None,
           kvm_boot_timeout_s: float = 30.0,
           use_systemd: bool | None = None) -> list[LaunchedGuest]:
    """Start ``count`` guests and write ``run_dir/guests.toml``.

    Guests are daemons that outlive the launching process, unless
    ``die_with_parent``: then each QEMU is a child that gets SIGTERM when the
    launching process dies, however it dies (tests use this so that no guest
    outlives an interrupted test run). ``names`` and ``memories_mib`` name the
    guests and size each one (default: PREFIX1..PREFIXn, ``memory_mib`` each).
    Under KVM, a guest that has not reached its init within ``kvm_boot_timeout_s``
    means KVM does not really work here: every guest is started again under TCG
    (``LaunchedGuest.fallback`` says why). Each QEMU runs in a cgroup of its own
    (cgroup_place.py; ``use_systemd`` None: a systemd scope where systemd runs).

    Raises:
        ConfigError: bad counts, sizes or names, a socket path too long, or
            file-backed RAM on tmpfs.
        BackendError: QEMU is missing or a guest fails to start (the others are
            stopped again).
    """
    if names is not None:
        count = len(names)
    if not 1 <= count <= 64:
        raise ConfigError(f"--count: expected 1 to 64 guests, found {count}")
    if not _NAME.match(prefix):
        raise ConfigError(f"--prefix: expected letters, digits, '-', '_' or '.', found "
                          f"{prefix!r}")
    names = list(names) if names is not None else [f"{prefix}{i}" for i in range(1, count + 1)]
    memories = list(memories_mib) if memories_mib is not None else [memory_mib] * count
    workload = workload or WorkloadParams()
    for name, memory in zip(names, memories, strict=True):
        if not _NAME.match(name):
            raise ConfigError(f"guest name: expected letters, digits, '-', '_' or '.', found "
                              f"{name!r}")
        if not 64 <= memory <= 65536:
            raise ConfigError(f"{name}: memory: expected 64 MiB to 64 GiB, found {memory} MiB")
        if (workload.shared_mib + workload.private_mib) * 1.1 > memory:
            raise ConfigError(f"workload: {workload.shared_mib + workload.private_mib} MiB of "
                              f"data does not fit {name}'s {memory} MiB tmpfs with room for "
                              "the guest itself")
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    if len(str(run_dir / f"{max(names, key=len)}{OPERATOR_QMP}")) > _MAX_SOCKET_PATH:
        raise ConfigError(f"--dir: {run_dir} is too long for a unix socket path "
                          f"({_MAX_SOCKET_PATH} bytes at most); choose a shorter directory")
    if file_backed:
        swap_dir = Path(swap_dir or run_dir).resolve()
        swap_dir.mkdir(parents=True, exist_ok=True)
        if on_tmpfs(swap_dir):
            raise ConfigError(f"--swap-dir: {swap_dir} is on tmpfs; file-backed guest RAM "
                              "needs a disk to be paged to")
    for name in names:
        running = LaunchedGuest(name, run_dir / f"{name}.qmp", run_dir / f"{name}.pid",
                                run_dir / f"{name}.log", 0)
        pid = running.pid
        if pid is not None and _alive(pid) and _is_guest(pid, running):
            raise ConfigError(f"{name}: a guest of that name runs already from {run_dir} "
                              f"(pid {pid}); stop it first, or choose another --dir or --prefix")
    if accel is None:
        accel, _ = choose_accel()
    tag = f"hvmem-{os.getpid()}-{int(time.time())}"
    record = CgroupRecord(default_state_dir())

    def start_all(accel: str) -> list[LaunchedGuest]:
        started: list[LaunchedGuest] = []
        try:
            for name, memory in zip(names, memories, strict=True):
                ram_file = (swap_dir / f"{name}.vswp") if file_backed and swap_dir else None
                where = place(f"{tag}-{name}", file_backed, record, cgroup_root, use_systemd)
                argv = qemu_command(name, image, memory, run_dir, workload, accel, ram_file)
                for stale in (".qmp", OPERATOR_QMP, ".pid"):
                    (run_dir / (name + stale)).unlink(missing_ok=True)
                guest = LaunchedGuest(name, run_dir / f"{name}.qmp", run_dir / f"{name}.pid",
                                      run_dir / f"{name}.log", memory, ram_file,
                                      where.cgroup.path if where.cgroup else None, accel,
                                      scope=where.scope)
                try:
                    try:
                        _start(where.prefix + argv, where.cgroup, guest, die_with_parent,
                               where.psi_cgroup)
                    except BackendError:
                        if where.scope is None:
                            raise
                        # systemd-run could not make the scope (no bus, no permission):
                        # a directory of hvmem's own, as on a host without systemd.
                        where = place(f"{tag}-{name}", file_backed, record, cgroup_root, False)
                        guest = dataclasses.replace(guest, scope=None, cgroup=where.cgroup.path
                                                    if where.cgroup else None)
                        _start(argv, where.cgroup, guest, die_with_parent, where.psi_cgroup)
                except BaseException:
                    if where.psi_cgroup is not None:
                        with contextlib.suppress(OSError):
                            where.psi_cgroup.rmdir()
                    raise
                if where.scope is not None:
                    found = settle(where, guest.pid, cgroup_root)
                    guest = dataclasses.replace(guest, cgroup=found.path if found else None)
                started.append(guest)
        except BaseException:
            stop(started)
            raise
        return started

    try:
        started = start_all(accel)
    except BackendError as err:
        if accel != "kvm":
            raise
        started = [dataclasses.replace(g, fallback=f"QEMU did not start under KVM: {err}")
                   for g in start_all("tcg")]
        accel = "tcg"
    if accel == "kvm":
        # The second safety net [QEMU-PROBE]: a KVM that is not what it seems
        # never gets the guest to its init; then every guest runs under TCG instead.
        try:
            for g in started:
                wait_for_marker(g.serial_log, "HVMEM-INIT", kvm_boot_timeout_s, g.pid)
        except BackendError as err:
            stop(started, remove_files=True)
            started = [dataclasses.replace(g, fallback=str(err)) for g in start_all("tcg")]
            accel = "tcg"
        except BaseException:
            stop(started)
            raise
    (run_dir / GUESTS_FILE).write_text(_guests_toml(started, accel, host_memory_mib))
    with contextlib.suppress(OSError):
        prune_launch_records(record.directory)
    return started


#: Guests started with ``die_with_parent``, by pid, to be reaped by :func:`stop`.
_CHILDREN: dict[int, subprocess.Popen] = {}
_PR_SET_PDEATHSIG = 1


def _start(argv: list[str], cgroup: MemoryCgroup | None, guest: LaunchedGuest,
           die_with_parent: bool = False, psi_cgroup: Path | None = None) -> None:
    def enter_cgroup() -> None:  # runs in the child, before exec
        if cgroup is not None:
            (cgroup.path / "cgroup.procs").write_text(f"{os.getpid()}\n")
        if psi_cgroup is not None:
            with contextlib.suppress(OSError):  # pressure unread, nothing worse
                (psi_cgroup / "cgroup.procs").write_text(f"{os.getpid()}\n")
        if die_with_parent:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    if die_with_parent:
        _start_child([a for a in argv if a != "-daemonize"], enter_cgroup, cgroup, guest)
        return

    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, preexec_fn=enter_cgroup if cgroup or psi_cgroup
                              else None,
                              check=False)
    except FileNotFoundError:
        if cgroup is not None:
            cgroup.remove()
        raise BackendError(f"{QEMU_BINARY} not found (apt-get install qemu-system-x86)") \
            from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{guest.name}: QEMU did not finish starting within 60 s") from None
    if done.returncode != 0:
        if cgroup is not None:
            cgroup.remove()
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackendError(f"{guest.name}: QEMU failed to start: {last}")


def _start_child(argv: list[str], preexec, cgroup: MemoryCgroup | None,
                 guest: LaunchedGuest) -> None:
    """Start QEMU as our child (it gets SIGTERM if we die) and wait for its QMP socket."""
    err_path = guest.serial_log.with_suffix(".err")
    try:
        with open(err_path, "w") as err:
            popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                     preexec_fn=preexec)
    except FileNotFoundError:
        if cgroup is not None:
            cgroup.remove()
        raise BackendError(f"{QEMU_BINARY} not found (apt-get install qemu-system-x86)") \
            from None
    _CHILDREN[popen.pid] = popen
    deadline = time.monotonic() + 60
    while not (guest.qmp.exists() and guest.pid_file.exists()):
        if popen.poll() is not None:
            _CHILDREN.pop(popen.pid, None)
            if cgroup is not None:
                cgroup.remove()
            last = (err_path.read_text().strip().splitlines() or ["no message"])[-1]
            raise BackendError(f"{guest.name}: QEMU failed to start: {last}")
        if time.monotonic() > deadline:
            popen.kill()
            popen.wait()
            raise BackendError(f"{guest.name}: QEMU did not finish starting within 60 s")
        time.sleep(0.05)


def wait_for_marker(log: Path, marker: str, timeout_s: float, pid: int | None = None) -> str:
    """Wait until a line containing ``marker`` is on the serial log; returns the line.

    Raises:
        BackendError: the timeout passed, or the QEMU process exited first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                if marker in line:
                    return line
        if pid is not None and not Path(f"/proc/{pid}").exists():
            raise BackendError(f"{log}: QEMU (pid {pid}) exited before {marker}")
        if time.monotonic() > deadline:
            raise BackendError(f"{log}: no {marker} within {timeout_s:g} s")
        time.sleep(0.25)


def read_guests_file(path: Path) -> tuple[list[LaunchedGuest], dict]:
    """The guests a launch recorded, and the file's raw table (for ``[host]``).

    Raises:
        ConfigError: the file is missing or malformed (names the file and field).
    """
    path = Path(path)
    data = read_toml(path, "guests file")  # one ConfigError line whatever the bytes
    from hvmem.units import MIB, parse_size_bytes

    guests = []
    for i, entry in enumerate(data.get("guest", [])):
        where = f"{path}: guest[{i}]"
        for key in ("name", "qmp"):
            if not isinstance(entry.get(key), str):
                raise ConfigError(f"{where}.{key}: expected a string, found "
                                  f"{entry.get(key)!r}")
        memory = parse_size_bytes(entry.get("memory", "0"), what=f"{where}.memory") // MIB

        def opt(key: str, entry: dict = entry) -> Path | None:
            return Path(entry[key]) if isinstance(entry.get(key), str) else None

        guests.append(LaunchedGuest(entry["name"], Path(entry["qmp"]),
                                    opt("pid_file") or Path(entry["qmp"] + ".pid"),
                                    opt("serial_log") or Path(entry["qmp"] + ".log"),
                                    memory, opt("ram_file"), opt("cgroup"),
                                    scope=entry.get("scope") if isinstance(
                                        entry.get("scope"), str) else None))
    return guests, data


def _is_guest(pid: int, g: LaunchedGuest) -> bool:
    """Whether ``pid`` is still this guest's QEMU (a pid file may outlive its process)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"qemu" in cmdline.split(b"\0")[0] and str(g.qmp).encode() in cmdline


def _pressure_cgroup(pid: int, root: Path = DEFAULT_CGROUP_ROOT) -> Path | None:
    """The unified cgroup a launch made for a QEMU's pressure (None: not one of ours)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" and Path(path).name.startswith("hvmem-"):
            return root / "unified" / path.strip("/")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) is not alive.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(guests: list[LaunchedGuest], timeout_s: float = 10.0,
         remove_files: bool = True) -> list[str]:
    """Stop guests (QMP ``quit``, then SIGTERM, then SIGKILL, by pid) and clean up.

    Removes their sockets, pid files, RAM files and cgroups (serial logs stay
    unless ``remove_files``). Returns what could not be cleaned up.
    """
    problems: list[str] = []
    for g in guests:
        pid = g.pid
        # A scope's cgroups are systemd's: it removes them when QEMU exits.
        psi_cgroup = (_pressure_cgroup(pid) if pid is not None and g.scope is None
                      and _is_guest(pid, g) else None)
        if pid is not None and _alive(pid) and _is_guest(pid, g):
            with contextlib.suppress(BackendError), QmpClient(g.qmp, 2.0, g.name) as qmp:
                qmp.call_once("quit")
            deadline = time.monotonic() + timeout_s
            for sig in (signal.SIGTERM, signal.SIGKILL):
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.1)
                if not _alive(pid):
                    break
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                deadline = time.monotonic() + 5.0
            if _alive(pid):
                problems.append(f"{g.name}: QEMU pid {pid} did not exit")
                continue
        child = _CHILDREN.pop(pid, None) if pid is not None else None
        if child is not None:
            child.wait()
        for path in (g.qmp, g.operator_qmp, g.pid_file, g.ram_file if remove_files else None,
                     g.serial_log.with_suffix(".err")):
            if path is not None:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        if remove_files:
            with contextlib.suppress(FileNotFoundError):
                g.serial_log.unlink()
        for attempt in range(50 if psi_cgroup is not None else 0):
            try:  # an exiting process leaves its cgroup a moment later (longer when busy)
                psi_cgroup.rmdir()
            except FileNotFoundError:
                break
            except OSError as err:
                if attempt == 49:
                    problems.append(f"{psi_cgroup}: cannot remove cgroup ({err.strerror})")
                time.sleep(0.1)
                continue
            break
        if g.cgroup is not None and g.scope is None and g.cgroup.exists():
            for attempt in range(20):  # an exiting process leaves its cgroup a moment later
                try:
                    MemoryCgroup(g.cgroup, 1).remove()
                    break
                except BackendError as err:
                    if attempt == 19:
                        problems.append(str(err))
                    time.sleep(0.1)
    with contextlib.suppress(OSError):
        prune_launch_records()  # the cgroups removed leave the launches' records
    return problems
