"""The libvirt backend against libvirt's built-in ``test:///default`` driver.

The test driver needs no daemon, no KVM and no root: its one domain, ``test``
(8 GiB configured, 2 GiB live, a virtio balloon), lives inside the libvirt
library of this process and answers ``memoryStats`` (with ``rss``, ``usable`` and
``unused`` figures that follow its live memory), ``setMemoryFlags``,
``memoryParameters``/``setMemoryParameters`` (hard_limit, soft_limit,
swap_hard_limit) and ``setMemoryStatsPeriod``. Its state lasts while any
connection to it is open, so each test holds one (``conn``) and reads through it
what the controller did. Its domains are no processes: KSM is left alone.
"""

from __future__ import annotations

import json
import sys
import time

import pytest
from typer.testing import CliRunner

from hvmem.ui.cli import app

pytestmark = pytest.mark.integration

try:
    import libvirt
except ImportError:
    pytest.skip("libvirt tests skipped: libvirt's Python binding is missing; to run them: "
                "apt-get install python3-libvirt (as root), then make setup",
                allow_module_level=True)

URI = "test:///default"
GIB_KIB = 1 << 20
UNLIMITED = 9007199254740991
runner = CliRunner()


@pytest.fixture
def conn():
    """A connection held open for the test, the domain at its full 8 GiB (no balloon)."""
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    c = libvirt.open(URI)
    dom = c.lookupByName("test")
    dom.setMemory(8 * GIB_KIB)
    dom.setMemoryParameters({k: UNLIMITED for k in ("hard_limit", "soft_limit",
                                                      "swap_hard_limit")}, 0)
    yield c
    c.close()


def control(tmp_path, *args):
    result = runner.invoke(app, ["libvirt", "control", "--uri", URI, "--no-live",
                                 "--state-dir", str(tmp_path / "state"),
                                 "--out", str(tmp_path / "out"), *args])
    return result


def rows(tmp_path):
    from hvmem.results import read_results

    r = read_results(tmp_path / "out")
    return r.vms.to_pandas(), r.host.to_pandas()


def events(tmp_path):
    return [json.loads(line) for line in (tmp_path / "out" / "events.jsonl").read_text()
            .splitlines()]


def test_control_plans_and_applies_balloon_targets(conn, tmp_path):
    """--duration 5s with the host in SOFT: the balloon inflates, and stays (no deflate)."""
    dom = conn.lookupByName("test")
    # The domain holds 4 GiB (the test driver's rss is half its live memory): a budget
    # 104 MiB above that leaves free memory in SOFT, where the esx policy balloons.
    result = control(tmp_path, "--duration", "5s", "--interval", "2s",
                     "--host-memory", "4200MiB", "--no-deflate-on-exit")
    assert result.exit_code == 0, result.output
    assert "KSM left alone" in result.output
    vms, host = rows(tmp_path)
    assert host["state"].iloc[0] == "soft"
    assert vms["MCTLTGT"].max() > 100  # MiB: planned ...
    assert vms["MCTLSZ"].iloc[-1] == pytest.approx(vms["MCTLTGT"].iloc[-1], abs=2)  # ... applied
    # ... as the connection sees it: the live memory is what the balloon leaves.
    assert dom.info()[2] / 1024 == pytest.approx(8192 - vms["MCTLTGT"].iloc[-1], abs=1)
    assert "balloon_reached" in [e["event"] for e in events(tmp_path)]
    assert not list((tmp_path / "state").glob("libvirt-*.json"))


def test_control_returns_the_balloons_on_exit(conn, tmp_path):
    dom = conn.lookupByName("test")
    dom.setMemory(6 * GIB_KIB)  # a balloon of 2 GiB to begin with; rss 3 GiB
    result = control(tmp_path, "--duration", "2s", "--interval", "1s",
                     "--host-memory", "3176MiB")
    assert result.exit_code == 0, result.output
    vms, host = rows(tmp_path)
    assert host["state"].iloc[0] == "soft"
    assert vms["MCTLSZ"].iloc[0] == pytest.approx(2048)
    assert vms["MCTLSZ"].max() > 2048 + 50  # it inflated ...
    assert dom.info()[2] == 6 * GIB_KIB  # ... and gave it back
    assert not list((tmp_path / "state").glob("libvirt-*.json"))


def test_control_returns_the_limits_on_exit(conn, tmp_path):
    """In LOW the domain is swapped by a memtune hard_limit; exit puts the originals back."""
    dom = conn.lookupByName("test")
    # The originals to put back: limits of its own (libvirt keeps hard <= swap_hard).
    dom.setMemoryParameters({"hard_limit": 7 * GIB_KIB, "swap_hard_limit": 7 * GIB_KIB}, 0)
    result = control(tmp_path, "--duration", "1s", "--host-memory", "2GiB")
    assert result.exit_code == 0, result.output
    vms, host = rows(tmp_path)
    assert host["state"].iloc[0] == "low"
    limits = vms["cgroup_limit_mib"]
    assert (limits >= 192).all() and (limits < 4096).all()  # the hard limit, above its floor
    assert "swap_limit" in [e["event"] for e in events(tmp_path)]
    assert dom.memoryParameters() == {"hard_limit": 7 * GIB_KIB, "soft_limit": UNLIMITED,
                                      "swap_hard_limit": 7 * GIB_KIB}
    assert not list((tmp_path / "state").glob("libvirt-*.json"))


def test_dry_run_changes_nothing(conn, tmp_path):
    dom = conn.lookupByName("test")
    result = control(tmp_path, "--duration", "1s", "--host-memory", "2GiB", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "test: target" in result.output and "balloon" in result.output
    assert dom.info()[2] == 8 * GIB_KIB
    assert dom.memoryParameters()["hard_limit"] == UNLIMITED


def crashed_controller(dom, state):
    """A controller that inflated the balloon (SOFT), then limited the domain (LOW), then
    died without closing, as after a SIGKILL: its state file names a process gone."""
    from hvmem.backends.libvirt.backend import LibvirtBackend
    from hvmem.backends.qemu.config import BackendOptions
    from hvmem.backends.qemu.control import ControlLoop

    dom.setMemory(6 * GIB_KIB)
    backend = LibvirtBackend(URI, None, BackendOptions(host_memory_mib=3176, state_dir=state,
                                                       sample_cache_s=0.0))
    loop = ControlLoop(backend, "esx", 0.1, tick_s=0.1)
    loop.tick()
    backend.set_host_memory(2048)
    time.sleep(0.1)
    loop.tick()
    assert dom.info()[2] < 6 * GIB_KIB and dom.memoryParameters()["hard_limit"] < UNLIMITED
    (path,) = state.glob("libvirt-*.json")
    record = json.loads(path.read_text())
    record["pid_start"] = -1
    path.write_text(json.dumps(record))
    return backend


def test_restore_after_a_crash(conn, tmp_path):
    """A controller that dies without closing leaves a state file; restore undoes it."""

    dom = conn.lookupByName("test")
    state = tmp_path / "state"
    backend = crashed_controller(dom, state)
    (path,) = state.glob("libvirt-*.json")
    result = runner.invoke(app, ["libvirt", "restore", "--uri", URI, "--state-dir", str(state)])
    assert result.exit_code == 0, result.output
    assert "memtune back to" in result.output and "balloon returned" in result.output
    assert dom.info()[2] == 6 * GIB_KIB
    assert dom.memoryParameters()["hard_limit"] == UNLIMITED
    assert not path.exists()
    result = runner.invoke(app, ["libvirt", "restore", "--state-dir", str(state)])
    assert "nothing to restore" in result.output
    backend.conn.close()


def test_next_control_restores_a_crashed_one_first(conn, tmp_path):
    from hvmem.backends.libvirt.backend import LibvirtBackend
    from hvmem.backends.qemu.config import BackendOptions

    dom = conn.lookupByName("test")
    state = tmp_path / "state"
    first = crashed_controller(dom, state)
    second = LibvirtBackend(URI, None, BackendOptions(state_dir=state))
    kinds = [e["event"] for e in second.events]
    assert "restored" in kinds
    # Its originals are the domain's own, not the crashed controller's settings.
    assert second.guests["test"].original_balloon_mib == 2048
    assert second.guests["test"].original_memtune["hard_limit"] == UNLIMITED
    second.close()
    first.conn.close()


def test_a_paused_domain_is_kept_and_taken_back(conn, tmp_path):
    from hvmem.backends.libvirt.backend import LibvirtBackend
    from hvmem.backends.qemu.config import BackendOptions

    dom = conn.lookupByName("test")
    backend = LibvirtBackend(URI, None, BackendOptions(state_dir=tmp_path, sample_cache_s=0.0))
    try:
        dom.suspend()
        assert backend.observe().vms[0].balloon_stuck
        assert "test" in backend.guests
        dom.resume()
        backend.observe()
        kinds = [e["event"] for e in backend.events]
        assert kinds.count("guest_stalled") == 1 and "guest_resumed" in kinds
    finally:
        backend.close()


def test_unknown_domain_and_bad_uri_are_one_line(conn, tmp_path):
    result = control(tmp_path, "--domain", "nope", "--duration", "1s")
    assert result.exit_code == 1
    assert result.output.strip() == "hvmem: error: --domain: no domain 'nope' on test:///default"
    result = control(tmp_path, "--duration", "1s", uri := "--uri", "nosuchdriver:///x")
    assert result.exit_code == 1 and uri
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hvmem: error: --uri nosuchdriver:///x: "
                                                   "cannot connect")


def test_missing_binding_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "libvirt", None)  # import libvirt raises ImportError
    result = control(tmp_path, "--duration", "1s")
    assert result.exit_code == 1
    assert result.output.strip() == (
        "hvmem: error: the libvirt backend needs libvirt's Python binding: apt-get install "
        "python3-libvirt, then make setup (it links the binding into .venv)")


@pytest.mark.parametrize(("uri", "local"), [
    ("qemu:///system", True), ("qemu:///session", True), ("qemu+unix:///system", True),
    ("qemu+ssh://kvm1/system", False), ("qemu+tcp://10.0.0.7/system", False),
    ("test:///default", False), ("xen:///system", False)])
def test_which_hosts_are_local(uri, local):
    from hvmem.backends.libvirt.connection import host_is_local

    assert host_is_local(uri) is local


@pytest.mark.parametrize(("uri", "driver", "available", "reason"), [
    ("qemu:///system", "qemu", True, None),
    ("qemu:///system", "qemu", False, "this kernel has no KSM"),
    ("qemu+ssh://kvm1/system", "qemu", True, "KSM is not reachable over the remote URI "
     "qemu+ssh://kvm1/system: plans made without sharing"),
    ("test:///default", "test", True, "the test driver's domains live in libvirt itself")])
def test_ksm_is_driven_only_where_the_domains_run(uri, driver, available, reason):
    from hvmem.backends.libvirt.backend import ksm_reason

    why = ksm_reason(uri, driver, manage=True, available=available)
    assert why is None if reason is None else why.startswith(reason)


def test_metrics_of_a_domain(conn, tmp_path):
    from hvmem.backends.libvirt.backend import LibvirtBackend
    from hvmem.backends.libvirt.control import LibvirtControlLoop
    from hvmem.backends.qemu.config import BackendOptions
    from hvmem.backends.qemu.control import COLUMNS
    from hvmem.backends.qemu.metrics import Metrics

    metrics = Metrics(COLUMNS)
    backend = LibvirtBackend(URI, None, BackendOptions(host_memory_mib=4200, state_dir=tmp_path))
    loop = LibvirtControlLoop(backend, "esx", 15.0, metrics=metrics)
    try:
        loop.tick()
    finally:
        backend.close()
    value = metrics.registry.get_sample_value
    assert value("hvmem_vm_up", {"vm": "test"}) == 1.0
    assert value("hvmem_vm_memsz_bytes", {"vm": "test"}) == 8 << 30
    assert value("hvmem_vm_sztgt_bytes", {"vm": "test"}) < 4 << 30  # the plan's target
    assert value("hvmem_host_state", {"state": "soft"}) == 1.0
    assert "libvirt domains of test:///default" in loop._scenario(1).description
