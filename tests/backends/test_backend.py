import time

import pytest

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.errors import BackendError, ConfigError
from hvmem.policy.controller import PolicyController
from hvmem.policy.policies import make_policy
from hvmem.policy.ports import MemoryBackend
from hvmem.policy.samples import HostPlan, Plans, SharingMode, VmPlan
from hvmem.policy.states import MemState

MIB = 1 << 20


def balloon_sizes(guest):
    """The guest sizes (MiB) the backend asked QEMU for, in order."""
    return [args["value"] / MIB for cmd, args in guest.commands if cmd == "balloon"]


def plans(state, **vms):
    return Plans({n: VmPlan(target_mib=0, balloon_target_mib=b, swap_target_mib=s)
                  for n, (b, s) in vms.items()}, HostPlan(state=state))


def test_sample_maps_qmp_proc_and_stats(fake_host, clock):
    fake_host.add_guest("g1", 4001, ram_rss_mib=400)
    fake_host.add_guest("g2", 4002, ram_rss_mib=200, actual_mib=384.0)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2", shares="high")],
                          fake_host.options(host_memory_mib=2048, clock=clock))
    assert isinstance(backend, MemoryBackend)
    host, vms = backend.sample()
    g1, g2 = vms
    assert (g1.configured_mib, g1.consumed_mib, g1.overhead_mib) == (512, 400, 80)
    assert g1.balloon_mib == 0 and g2.balloon_mib == 128
    assert g1.guest_available_mib == 300 and g1.guest_free_mib == 280
    assert g1.active_mib == 512 - 300  # what the guest uses: configured - balloon - available
    assert g2.shares == 20 * 512 and g1.shares == 10 * 512
    assert g1.balloon_max_mib == pytest.approx(0.65 * 512)
    assert host.total_mib == 2048
    assert host.free_mib == 2048 - (400 + 80) - (200 + 80)
    assert host.state == MemState.HIGH
    backend.close()


def test_guest_stats_polling_is_switched_on(fake_host):
    guest = fake_host.add_guest("g1", 4001)
    QemuBackend([fake_host.spec("g1")], fake_host.options(stats_interval_s=3)).close()
    assert ("qom-set", {"path": "/machine/peripheral/balloon0",
                        "property": "guest-stats-polling-interval", "value": 3}) in guest.commands


def test_budget_pressure_gives_a_reclaiming_state(fake_host, clock):
    fake_host.add_guest("g1", 4001, ram_rss_mib=400)
    backend = QemuBackend([fake_host.spec("g1")],
                          fake_host.options(host_memory_mib=490, clock=clock))
    host, _ = backend.sample()
    assert host.free_mib == 10 and host.state == MemState.SOFT
    backend.set_host_memory(4096)
    assert backend.sample()[0].state == MemState.HIGH
    backend.close()


def test_balloon_target_goes_to_qemu(fake_host, clock):
    guest = fake_host.add_guest("g1", 4001)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g1=(100.0, 0.0)))
    assert balloon_sizes(guest) == [412.0]
    clock.advance(1)
    _, (vm,) = backend.sample()
    assert vm.balloon_mib == 100 and vm.balloon_target_mib == 100 and not vm.balloon_stuck
    assert any(e["event"] == "balloon_reached" for e in backend.events)
    backend.close()


def test_balloon_never_below_the_guest_floor(fake_host, clock):
    """A guest under memory pressure: the balloon stops at what it uses plus a reserve."""
    guest = fake_host.add_guest("g1", 4001, available_mib=100.0, free_mib=20.0)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g1=(300.0, 0.0)))
    used, reserve = 512 - 100, 64
    assert balloon_sizes(guest) == [used + reserve]  # guest keeps 476 MiB, not 212
    floor_events = [e for e in backend.events if e["event"] == "balloon_floor"]
    assert len(floor_events) == 1 and "uses 412 MiB" in floor_events[0]["detail"]
    # Deflation is always allowed.
    backend.apply(plans(MemState.HIGH, g1=(0.0, 0.0)))
    assert balloon_sizes(guest)[-1] == 512
    backend.close()


def test_no_inflation_without_guest_stats(fake_host, clock):
    guest = fake_host.add_guest("g1", 4001, available_mib=None, free_mib=None)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g1=(200.0, 0.0)))
    assert balloon_sizes(guest) == []
    assert "no guest stats" in backend.events[-1]["detail"]
    backend.close()


def test_guest_without_balloon_driver_is_stuck(fake_host, clock):
    """No stats ever (the driver sends them as it starts): the balloon is stuck."""
    guest = fake_host.add_guest("g1", 4001)
    guest.stats_update = 0  # QEMU answers, but nothing ever came from the guest
    backend = QemuBackend([fake_host.spec("g1")],
                          fake_host.options(clock=clock, balloon_stuck_after_s=5))
    assert not backend.sample()[1][0].balloon_stuck
    clock.advance(5)
    assert backend.sample()[1][0].balloon_stuck
    assert "balloon driver is not running" in backend.events[-1]["detail"]
    backend.close()


def test_stuck_balloon_is_detected_and_held(fake_host, clock):
    """A balloon driver that never inflates: stuck after the no-progress time."""
    guest = fake_host.add_guest("g1", 4001, balloon_rate_mib_s=0)
    backend = QemuBackend([fake_host.spec("g1")],
                          fake_host.options(clock=clock, balloon_stuck_after_s=5))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g1=(100.0, 0.0)))
    for _ in range(4):
        clock.advance(1)
        _, (vm,) = backend.sample()
        assert not vm.balloon_stuck
    clock.advance(1.5)
    _, (vm,) = backend.sample()
    assert vm.balloon_stuck
    assert balloon_sizes(guest) == [412, 512]  # target set back to where the balloon is
    stuck = [e for e in backend.events if e["event"] == "balloon_stuck"]
    assert "no progress for 6 s" in stuck[0]["detail"]
    # A stuck driver is not pushed again until the retry time has passed.
    backend.apply(plans(MemState.SOFT, g1=(150.0, 0.0)))
    assert balloon_sizes(guest) == [412, 512]
    clock.advance(61)
    _, (vm,) = backend.sample()
    assert not vm.balloon_stuck
    backend.close()


def test_slow_balloon_times_out(fake_host, clock):
    fake_host.add_guest("g1", 4001, balloon_rate_mib_s=1000)
    backend = QemuBackend([fake_host.spec("g1")],
                          fake_host.options(clock=clock, balloon_timeout_s=3,
                                            balloon_stuck_after_s=100))
    backend.sample()
    backend.apply(plans(MemState.SOFT, g1=(100.0, 0.0)))
    guest = fake_host.guests["g1"]
    guest.balloon_rate_mib_s = 0  # moves once, then stalls: no longer progress
    guest.move(480)
    for _ in range(3):
        clock.advance(1.1)
        backend.sample()
    assert any("not reached within 3 s" in e["detail"] for e in backend.events)
    backend.close()


def test_anonymous_guest_on_swapless_host_is_never_limited(fake_host, clock):
    guest = fake_host.add_guest("g1", 4001)
    cg = fake_host.add_cgroup(guest, usage_mib=480)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.HARD, g1=(0.0, 200.0)))
    backend.apply(plans(MemState.HARD, g1=(0.0, 250.0)))
    refused = [e for e in backend.events if e["event"] == "swap_refused"]
    assert len(refused) == 1  # said once, not every period
    assert "RAM is anonymous and the host has no swap" in refused[0]["detail"]
    assert "OOM-killed" in refused[0]["detail"]
    assert (cg / "memory.limit_in_bytes").read_text().strip() == "9223372036854771712"
    backend.close()


def test_anonymous_guest_with_host_swap_may_be_limited(fake_host, clock):
    guest = fake_host.add_guest("g1", 4001)
    cg = fake_host.add_cgroup(guest, usage_mib=480)
    fake_host.set_meminfo(total_mib=24000, free_mib=20000, swap_mib=4096)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.HARD, g1=(0.0, 200.0)))
    assert int((cg / "memory.limit_in_bytes").read_text()) == 280 * MIB
    backend.close()


def file_backed_guest(fake_host, tmp_path, **kw):
    ram = tmp_path / "g1.vswp"
    ram.write_bytes(b"")
    guest = fake_host.add_guest("g1", 4001, ram_file=str(ram), **kw)
    return guest, fake_host.add_cgroup(guest, usage_mib=480)


def test_file_backed_guest_limit_floor_and_lift(fake_host, clock, tmp_path):
    guest, cg = file_backed_guest(fake_host, tmp_path)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    assert int((cg / "memory.limit_in_bytes").read_text()) == 380 * MIB
    # Never below QEMU's anonymous memory (80 MiB) plus the headroom (96 MiB).
    (cg / "memory.usage_in_bytes").write_text(f"{380 * MIB}\n")
    (cg / "memory.limit_in_bytes").write_text(f"{380 * MIB}\n")
    clock.advance(1)
    backend.sample()
    backend.apply(plans(MemState.HARD, g1=(0.0, 1000.0)))
    assert int((cg / "memory.limit_in_bytes").read_text()) == 176 * MIB
    # Back in HIGH: the limit is lifted, pages return as the guest touches them.
    backend.apply(plans(MemState.HIGH, g1=(0.0, 1000.0)))
    assert (cg / "memory.limit_in_bytes").read_text().strip() == "-1"
    assert [e["event"] for e in backend.events].count("swap_limit") == 2
    backend.close()


def test_stuck_balloon_falls_back_to_swapping_under_the_esx_policy(fake_host, clock, tmp_path):
    guest, cg = file_backed_guest(fake_host, tmp_path, balloon_rate_mib_s=0)
    backend = QemuBackend([fake_host.spec("g1")],
                          fake_host.options(clock=clock, host_memory_mib=490,
                                            balloon_stuck_after_s=3))
    controller = PolicyController(make_policy("esx"), backend, balance_period_s=2)
    first = controller.step(0.0)
    assert first["g1"].balloon_target_mib > 0 and first["g1"].swap_target_mib == 0
    assert controller.last.host.state == MemState.SOFT
    for _t in range(1, 5):
        clock.advance(1)
        backend.sample()
    clock.advance(1)
    plans_now = controller.step(5.0)
    assert controller.last.vms[0].balloon_stuck
    assert plans_now["g1"].swap_target_mib > 0
    limit = int((cg / "memory.limit_in_bytes").read_text())
    assert limit < 480 * MIB
    assert any(e["event"] == "swap_limit" for e in backend.events)
    backend.close()


def test_dead_guest_is_dropped_and_logged(fake_host, clock, caplog):
    fake_host.add_guest("g1", 4001)
    fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock))
    assert len(backend.sample()[1]) == 2
    fake_host.server("g1").kill()
    clock.advance(1)
    with caplog.at_level("WARNING", logger="hvmem.qemu"):
        _, vms = backend.sample()
    assert [vm.name for vm in vms] == ["g2"]
    assert "g1" not in backend.guests
    dropped = [e for e in backend.events if e["event"] == "guest_dropped"]
    assert dropped[0]["vm"] == "g1" and "guest died" in dropped[0]["detail"]
    assert "g1 dropped from control" in caplog.text
    # A plan made before the death names g1; applying it does no harm.
    backend.apply(plans(MemState.SOFT, g1=(50.0, 0.0), g2=(50.0, 0.0)))
    backend.close()


def test_dead_process_is_dropped(fake_host, clock):
    import shutil

    fake_host.add_guest("g1", 4001)
    fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock))
    shutil.rmtree(fake_host.proc / "4002")
    assert [vm.name for vm in backend.sample()[1]] == ["g1"]
    backend.close()


def test_silent_qmp_is_stalled_not_dropped_and_tried_again(fake_host, clock):
    fake_host.add_guest("g1", 4001)
    guest = fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock, qmp_timeout_s=0.2, max_failures=3,
                                            stall_retry_s=5))
    assert len(backend.sample()[1]) == 2
    guest.hang = True
    for _n in range(1, 4):
        clock.advance(1)
        start = time.monotonic()
        _, vms = backend.sample()
        assert time.monotonic() - start < 2.0  # a timeout and one retry, no more
        # Its memory still counts: the last reading, with its balloon not relied on.
        assert [vm.name for vm in vms] == ["g1", "g2"]
        assert vms[1].balloon_stuck == (_n == 3)  # stalled at the third
    kinds = [(e["event"], e["vm"]) for e in backend.events]
    assert kinds.count(("qmp_timeout", "g2")) == 3
    assert ("guest_stalled", "g2") in kinds and ("guest_dropped", "g2") not in kinds
    clock.advance(1)
    start = time.monotonic()
    backend.sample()  # stalled: QMP is not tried before stall_retry_s
    assert time.monotonic() - start < 0.15
    guest.hang = False
    clock.advance(5)
    _, vms = backend.sample()
    assert not vms[1].balloon_stuck and "g2" in backend.guests
    assert backend.events[-1]["event"] == "guest_resumed"
    backend.close()


def _set_state(fake_host, pid: int, state: str) -> None:
    stat = fake_host.proc / str(pid) / "stat"
    text = stat.read_text()
    stat.write_text(text.replace(") S ", f") {state} ").replace(") T ", f") {state} "))


def test_stopped_qemu_is_kept_and_never_connected_to(fake_host, clock):
    fake_host.add_guest("g1", 4001)
    guest = fake_host.add_guest("g2", 4002)
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock))
    backend.sample()
    _set_state(fake_host, 4002, "T")
    asked = len(guest.commands)
    for _ in range(4):
        clock.advance(1)
        _, vms = backend.sample()
        assert [vm.name for vm in vms] == ["g1", "g2"]
    backend.apply(plans(MemState.SOFT, g1=(50.0, 0.0), g2=(50.0, 0.0)))
    assert len(guest.commands) == asked  # nothing asked of a stopped QEMU
    stalled = [e for e in backend.events if e["event"] == "guest_stalled"]
    assert len(stalled) == 1 and "stopped (state T)" in stalled[0]["detail"]
    _set_state(fake_host, 4002, "S")
    clock.advance(1)
    _, vms = backend.sample()
    assert backend.events[-1]["event"] == "guest_resumed" and not backend.guests["g2"].stalled
    backend.close()


def test_zombie_qemu_is_dropped(fake_host, clock):
    fake_host.add_guest("g1", 4001)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    _set_state(fake_host, 4001, "Z")
    assert backend.sample()[1] == []
    assert backend.events[-1]["event"] == "guest_dropped"
    backend.close()


def test_silent_qmp_that_recovers_stays_under_control(fake_host, clock):
    guest = fake_host.add_guest("g1", 4001)
    backend = QemuBackend([fake_host.spec("g1")],
                          fake_host.options(clock=clock, qmp_timeout_s=0.2))
    guest.hang = True
    clock.advance(1)
    assert backend.sample()[1] == []
    guest.hang = False
    clock.advance(1)
    assert [vm.name for vm in backend.sample()[1]] == ["g1"]
    backend.close()


def test_ksm_tuned_by_state_and_restored(fake_host, clock):
    fake_host.add_guest("g1", 4001)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    ksm = fake_host.ksm

    def read():
        return tuple(int((ksm / n).read_text()) for n in
                     ("run", "pages_to_scan", "sleep_millisecs"))

    backend.apply(Plans({}, HostPlan(sharing=SharingMode.RUN, state=MemState.HARD)))
    assert read() == (1, 5000, 20)
    backend.apply(Plans({}, HostPlan(sharing=SharingMode.RUN, state=MemState.HIGH)))
    assert read() == (1, 100, 20)
    backend.apply(Plans({}, HostPlan(sharing=SharingMode.RUN, scan_pages=777, scan_sleep_ms=50,
                                     state=MemState.HIGH)))
    assert read() == (1, 777, 50)
    backend.close()
    assert read() == (0, 100, 20)


def test_ksm_savings_split_among_guests(fake_host, clock):
    g1 = fake_host.add_guest("g1", 4001)
    g2 = fake_host.add_guest("g2", 4002)
    fake_host.set_process(g1, 400, merging_pages=30000)
    fake_host.set_process(g2, 400, merging_pages=10000)
    (fake_host.ksm / "pages_shared").write_text("8000\n")
    (fake_host.ksm / "pages_sharing").write_text("32000\n")
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock))
    host, (v1, v2) = backend.sample()
    assert host.shared_saved_mib == pytest.approx(32000 * 4 / 1024)
    assert v1.shared_saved_mib == pytest.approx(30000 * 0.8 * 4 / 1024)
    assert v1.shared_saved_mib + v2.shared_saved_mib == pytest.approx(host.shared_saved_mib)
    assert v1.consumed_mib == pytest.approx(400 - v1.shared_saved_mib)
    backend.close()


def test_attach_errors_name_the_guest(fake_host, tmp_path):
    from hvmem.backends.qemu.config import GuestSpec

    fake_host.add_guest("g1", 4001)
    with pytest.raises(BackendError, match="no guest could be attached: nope: QMP socket .*"
                                           "does not exist"):
        QemuBackend([GuestSpec("nope", tmp_path / "x.qmp", pid=4001)], fake_host.options())
    with pytest.raises(ConfigError, match="unique"):
        QemuBackend([fake_host.spec("g1"), fake_host.spec("g1")], fake_host.options())
    with pytest.raises(ConfigError, match="host memory budget"):
        fake_host.options(host_memory_mib=-1)


def test_swap_in_rate_from_pages_read_back_into_the_cgroup(fake_host, clock, tmp_path):
    guest, cg = file_backed_guest(fake_host, tmp_path)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    (cg / "memory.stat").write_text("cache 0\nrss 0\npgpgin 2560\npgmajfault 3\n")
    clock.advance(2)
    _, (vm,) = backend.sample()
    assert vm.swap_in_rate_mib_s == pytest.approx(2560 * 4 / 1024 / 2)  # 5 MiB/s
    backend.close()


def test_swap_refused_outside_a_cgroup_of_its_own(fake_host, clock, tmp_path):
    fake_host.set_meminfo(total_mib=24000, free_mib=20000, swap_mib=4096)
    fake_host.add_guest("g1", 4001)  # no cgroup of its own
    guest2 = fake_host.add_guest("g2", 4002)
    cg = fake_host.add_cgroup(guest2, usage_mib=480)
    (cg / "cgroup.procs").write_text("4002\n999\n")  # shared with another process
    backend = QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                          fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0), g2=(0.0, 100.0)))
    why = {e["vm"]: e["detail"] for e in backend.events if e["event"] == "swap_refused"}
    assert "not in a memory cgroup of its own" in why["g1"]
    assert "holds other processes too" in why["g2"]
    (cg / "cgroup.procs").write_text("4002\n")  # the other process left: now it may
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0), g2=(0.0, 100.0)))
    assert int((cg / "memory.limit_in_bytes").read_text()) == 380 * MIB
    backend.close()


def test_ram_file_on_tmpfs_is_not_swapped(fake_host, clock):
    guest = fake_host.add_guest("g1", 4001, ram_file="/dev/shm/g1.vswp")
    fake_host.add_cgroup(guest, usage_mib=480)
    backend = QemuBackend([fake_host.spec("g1")], fake_host.options(clock=clock))
    backend.sample()
    backend.apply(plans(MemState.HARD, g1=(0.0, 100.0)))
    assert "is on tmpfs, so there is no disk" in backend.events[-1]["detail"]
    backend.close()
