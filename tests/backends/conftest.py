"""Fixtures for the QEMU backend: a fake QEMU (QMP server, /proc, cgroup and KSM files).

The fake speaks QMP JSON over a real unix socket (an asyncio server in a thread),
so the client, timeouts and dead-guest handling run exactly as against QEMU; its
/proc, cgroup and KSM trees are plain files under tmp_path that the backend is
pointed at. Integration tests with real QEMU live in test_qemu_integration.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

MIB = 1 << 20


@dataclass
class FakeGuest:
    """What one fake QEMU answers; tests change the fields as they go."""

    name: str
    pid: int
    configured_mib: int = 512
    actual_mib: float = 512.0
    balloon_target_mib: float | None = None
    balloon_rate_mib_s: float | None = None  # None: instant; 0: a driver that never moves
    available_mib: float | None = 300.0
    free_mib: float | None = 280.0
    stats_update: int = 1
    ram_file: str | None = None
    has_balloon: bool = True
    hang: bool = False  # accept connections, greet, answer nothing
    commands: list[tuple[str, Any]] = field(default_factory=list)
    # Called when the balloon moved (FakeHost: resident RAM follows it, as without
    # free page reporting; tests that model reporting set balloon_frees False).
    on_balloon: Any = None
    balloon_frees: bool = True
    _moved_at: float = field(default_factory=time.monotonic)

    def step_balloon(self) -> None:
        now = time.monotonic()
        dt, self._moved_at = now - self._moved_at, now
        if self.balloon_target_mib is None or self.balloon_rate_mib_s == 0:
            return
        if self.balloon_rate_mib_s is None:
            self.move(self.balloon_target_mib)
            return
        step = self.balloon_rate_mib_s * dt
        delta = self.balloon_target_mib - self.actual_mib
        self.move(self.actual_mib + max(-step, min(step, delta)))

    def move(self, actual_mib: float) -> None:
        """The balloon is now at guest size ``actual_mib``."""
        if actual_mib != self.actual_mib and self.on_balloon is not None and self.balloon_frees:
            self.on_balloon(self.actual_mib - actual_mib)
        self.actual_mib = actual_mib

    def answer(self, cmd: str, args: dict[str, Any]) -> dict[str, Any]:
        self.commands.append((cmd, args))
        self.step_balloon()
        if cmd == "qmp_capabilities":
            return {"return": {}}
        if cmd == "query-memory-size-summary":
            return {"return": {"base-memory": self.configured_mib * MIB}}
        if cmd == "qom-list":
            path = args["path"]
            if path == "/machine/peripheral":
                kids = [{"name": "balloon0", "type": "child<virtio-balloon-pci>"}]
                return {"return": kids if self.has_balloon else []}
            if path == "/objects":
                kind = "memory-backend-file" if self.ram_file else "memory-backend-ram"
                return {"return": [{"name": "m0", "type": f"child<{kind}>"}]}
            return {"error": {"class": "DeviceNotFound", "desc": f"no {path}"}}
        if cmd == "qom-get":
            if args["property"] == "mem-path":
                return {"return": self.ram_file}
            if args["property"] == "guest-stats":
                stats = {"stat-available-memory": -1 if self.available_mib is None
                         else int(self.available_mib * MIB),
                         "stat-free-memory": -1 if self.free_mib is None
                         else int(self.free_mib * MIB),
                         "stat-total-memory": int(self.actual_mib * MIB)}
                return {"return": {"stats": stats, "last-update": self.stats_update}}
        if cmd == "qom-set":
            return {"return": {}}
        if cmd == "query-balloon":
            if not self.has_balloon:
                return {"error": {"class": "DeviceNotActive", "desc": "No balloon device"}}
            return {"return": {"actual": int(self.actual_mib * MIB)}}
        if cmd == "balloon":
            self.balloon_target_mib = args["value"] / MIB
            self.step_balloon()
            return {"return": {}}
        return {"error": {"class": "CommandNotFound", "desc": f"unknown {cmd}"}}


class FakeQmpServer:
    """A unix-socket QMP server for one FakeGuest, in its own thread."""

    def __init__(self, path: Path, guest: FakeGuest):
        self.path = path
        self.guest = guest
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(5)

    async def _start(self) -> None:
        self.server = await asyncio.start_unix_server(self._serve, path=str(self.path))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        greeting = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0},
                                        "package": "fake"}, "capabilities": []}}
        writer.write(json.dumps(greeting).encode() + b"\n")
        await writer.drain()
        decoder = json.JSONDecoder()
        buf = ""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buf += data.decode()
                while buf.strip():
                    buf = buf.lstrip()
                    try:
                        msg, end = decoder.raw_decode(buf)
                    except ValueError:
                        break
                    buf = buf[end:]
                    if self.guest.hang and msg.get("execute") != "qmp_capabilities":
                        continue
                    reply = self.guest.answer(msg["execute"], msg.get("arguments") or {})
                    if "id" in msg:
                        reply["id"] = msg["id"]
                    writer.write(json.dumps(reply).encode() + b"\n")
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def kill(self) -> None:
        """The guest dies: the server closes, connections drop, the socket file goes."""
        async def stop() -> None:
            assert self.server is not None
            self.server.close()
            for w in self.writers:
                w.close()
        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(5)
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self.path.exists():
            self.kill()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class FakeHost:
    """A fake /proc, /sys/fs/cgroup and /sys/kernel/mm/ksm under one directory."""

    def __init__(self, root: Path):
        self.root = root
        self.proc = root / "proc"
        self.cgroup = root / "cgroup"
        self.ksm = root / "ksm"
        self.proc.mkdir()
        (self.cgroup / "memory").mkdir(parents=True)
        (self.cgroup / "memory" / "memory.limit_in_bytes").write_text(str(1 << 63) + "\n")
        self.ksm.mkdir()
        for name, value in (("run", 0), ("pages_to_scan", 100), ("sleep_millisecs", 20),
                            ("pages_shared", 0), ("pages_sharing", 0), ("full_scans", 0)):
            (self.ksm / name).write_text(f"{value}\n")
        self.set_meminfo(total_mib=24000, free_mib=20000, swap_mib=0)
        # Unix socket paths are limited to 108 bytes: keep them short.
        self.sock_dir = Path(tempfile.mkdtemp(prefix="hvq"))
        self.servers: list[FakeQmpServer] = []
        self.guests: dict[str, FakeGuest] = {}
        self.ram_rss: dict[str, float] = {}

    def set_meminfo(self, total_mib: float, free_mib: float, swap_mib: float = 0) -> None:
        (self.proc / "meminfo").write_text(
            f"MemTotal: {int(total_mib * 1024)} kB\nMemFree: {int(free_mib * 1024)} kB\n"
            f"MemAvailable: {int(free_mib * 1024)} kB\nBuffers: 0 kB\nCached: 0 kB\n"
            f"Shmem: 0 kB\nSwapTotal: {int(swap_mib * 1024)} kB\n")

    def set_process(self, guest: FakeGuest, ram_rss_mib: float, qemu_mib: float = 80,
                    merging_pages: int = 0) -> None:
        self.ram_rss[guest.name] = ram_rss_mib
        base = self.proc / str(guest.pid)
        base.mkdir(exist_ok=True)
        ram_kib = guest.configured_mib * 1024
        rss = int((ram_rss_mib + qemu_mib) * 1024)
        anon = rss if guest.ram_file is None else int(qemu_mib * 1024)
        (base / "status").write_text(f"Name:\tqemu-system-x86\nVmRSS:\t{rss} kB\n"
                                     f"RssAnon:\t{anon} kB\nVmSwap:\t0 kB\n")
        start = 0x7F0000000000
        path = guest.ram_file or ""
        (base / "smaps").write_text(
            f"55d000000000-55d000800000 r-xp 00000000 08:01 1 /usr/bin/qemu-system-x86_64\n"
            f"Size: 8192 kB\nRss: {int(qemu_mib * 1024)} kB\n"
            f"{start:x}-{start + ram_kib * 1024:x} rw-p 00000000 00:00 0 {path}\n"
            f"Size: {ram_kib} kB\nRss: {int(ram_rss_mib * 1024)} kB\n")
        (base / "stat").write_text(f"{guest.pid} (qemu-system-x86) S " + " ".join(
            ["0"] * 10) + " 100 50 0 0\n")
        (base / "ksm_merging_pages").write_text(f"{merging_pages}\n")
        (base / "cgroup").write_text(f"4:memory:/hvmem-test/{guest.name}\n")
        sock = self.sock_dir / f"{guest.name}.qmp"
        (base / "cmdline").write_bytes(b"qemu-system-x86_64\0-qmp\0"
                                       + f"unix:{sock},server=on,wait=off".encode() + b"\0")

    def add_cgroup(self, guest: FakeGuest, usage_mib: float) -> Path:
        path = self.cgroup / "memory" / "hvmem-test" / guest.name
        path.mkdir(parents=True, exist_ok=True)
        (path / "cgroup.procs").write_text(f"{guest.pid}\n")
        (path / "memory.limit_in_bytes").write_text("9223372036854771712\n")
        (path / "memory.usage_in_bytes").write_text(f"{int(usage_mib * MIB)}\n")
        (path / "memory.stat").write_text("cache 0\nrss 0\npgpgin 0\npgmajfault 0\n")
        (path / "memory.failcnt").write_text("0\n")
        return path

    def add_guest(self, name: str, pid: int, ram_rss_mib: float = 400, **kw: Any) -> FakeGuest:
        guest = FakeGuest(name=name, pid=pid, **kw)
        self.guests[name] = guest
        self.set_process(guest, ram_rss_mib)

        def balloon_moved(grown_mib: float) -> None:
            rss = self.ram_rss[name]
            self.set_process(guest, max(0.0, rss - grown_mib) if grown_mib > 0 else rss)

        guest.on_balloon = balloon_moved
        sock = self.sock_dir / f"{name}.qmp"
        self.servers.append(FakeQmpServer(sock, guest))
        return guest

    def server(self, name: str) -> FakeQmpServer:
        return next(s for s in self.servers if s.guest.name == name)

    def spec(self, name: str, **kw: Any):
        from hvmem.backends.qemu.config import GuestSpec

        guest = self.guests[name]
        return GuestSpec(name=name, qmp=self.sock_dir / f"{name}.qmp", pid=guest.pid, **kw)

    def options(self, **kw: Any):
        from hvmem.backends.qemu.config import BackendOptions

        kw.setdefault("qmp_timeout_s", 0.5)
        kw.setdefault("state_dir", self.root / "state")
        return BackendOptions(proc_root=self.proc, ksm_root=self.ksm,
                              cgroup_root=self.cgroup, **kw)

    def close(self) -> None:
        for server in self.servers:
            server.close()
        shutil.rmtree(self.sock_dir, ignore_errors=True)


@pytest.fixture(autouse=True)
def _state_dir(tmp_path_factory, monkeypatch):
    """Controllers started by these tests (and their child processes) keep their
    state files in a temporary directory, never in this host's /run/hvmem."""
    monkeypatch.setenv("HVMEM_STATE_DIR", str(tmp_path_factory.mktemp("hvmem-state")))


@pytest.fixture
def fake_host(tmp_path: Path):
    host = FakeHost(tmp_path)
    yield host
    host.close()


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


@pytest.fixture
def fake_launch(fake_host, tmp_path, monkeypatch) -> list[dict]:
    """``hvmem run`` of a qemu scenario over one fake guest "web" (pid 4001).

    What ``backends/qemu/scenario_run.py`` uses to launch and control guests is
    faked; returns the list that each ``launch`` call's keyword arguments go to.
    """
    from hvmem.backends.qemu import config as config_module
    from hvmem.backends.qemu import launcher, scenario_run

    fake_host.add_guest("web", 4001)
    pid_file = tmp_path / "web.pid"
    pid_file.write_text("4001\n")
    guest = launcher.LaunchedGuest(name="web", qmp=fake_host.spec("web").qmp, pid_file=pid_file,
                                   serial_log=tmp_path / "web.log", memory_mib=256)
    opts = fake_host.options()
    real_options = config_module.BackendOptions

    def fake_options(**kw):
        return real_options(proc_root=opts.proc_root, ksm_root=opts.ksm_root,
                            cgroup_root=opts.cgroup_root, **kw)

    calls: list[dict] = []

    def launch(image, run_dir, **kw):
        calls.append(kw)
        return [guest]

    monkeypatch.setattr(scenario_run, "require_tools", lambda: None)
    monkeypatch.setattr(scenario_run, "build_image", lambda *a, **k: None)
    monkeypatch.setattr(scenario_run, "launch", launch)
    monkeypatch.setattr(scenario_run, "wait_for_marker", lambda *a, **k: "HVMEM-READY")
    monkeypatch.setattr(scenario_run, "stop", lambda guests, **k: [])
    monkeypatch.setattr(scenario_run, "BackendOptions", fake_options)
    return calls


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# -- real QEMU (the integration suite) ------------------------------------------------------

@pytest.fixture(scope="session")
def qemu_image():
    """The cached guest image (built on first use; failing to build it is an error).

    Restores KSM's settings (and clears its counters) when the session ends.
    """
    import signal

    from hvmem.backends.qemu.guest_image import build_image
    from hvmem.backends.qemu.ksm import Ksm

    def interrupted(signum, frame):  # SIGTERM (a CI timeout): clean up as on Ctrl-C
        raise KeyboardInterrupt

    import fcntl
    import time

    # One QEMU suite at a time on a host: two would fight over KSM's settings.
    lock = open(Path(tempfile.gettempdir()) / "hvmem-qemu-tests.lock", "w")  # noqa: SIM115
    deadline = time.monotonic() + 600
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail("another QEMU integration suite held the host for 10 minutes")
            time.sleep(1)
    old_handler = signal.signal(signal.SIGTERM, interrupted)
    ksm = Ksm()
    ksm.save()
    try:
        yield build_image()  # a machine with QEMU that cannot build the guest is a failure
    finally:
        ksm.reset_counters()
        ksm.restore()
        signal.signal(signal.SIGTERM, old_handler)
        Path(lock.name).unlink(missing_ok=True)  # leave no file behind
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


@pytest.fixture(scope="session")
def qemu_dirs():
    """Short run directory (socket paths) and a disk directory for RAM files."""
    from hvmem.backends.qemu.cgroups import on_tmpfs
    from hvmem.backends.qemu.guest_image import default_cache_dir

    run = Path(tempfile.mkdtemp(prefix="hvi"))
    swap = run if not on_tmpfs(run) else default_cache_dir() / f"swap-{run.name}"
    swap.mkdir(parents=True, exist_ok=True)
    yield run, swap
    shutil.rmtree(run, ignore_errors=True)
    if swap != run:
        shutil.rmtree(swap, ignore_errors=True)
