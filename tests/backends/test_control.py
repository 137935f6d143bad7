import math
import os
import signal
import urllib.request

import pytest

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.control import COLUMNS, ControlLoop
from hvmem.backends.qemu.metrics import Metrics, metric_name
from hvmem.results import read_results, write_results
from hvmem.ui.top import COLUMNS as TOP_COLUMNS
from hvmem.ui.top import last_tick, render_top


def two_guests(fake_host, **opts):
    fake_host.add_guest("g1", 4001, ram_rss_mib=400)
    fake_host.add_guest("g2", 4002, ram_rss_mib=300)
    opts.setdefault("sample_cache_s", 0.02)
    return QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                       fake_host.options(**opts))


def test_rows_have_the_simulators_columns_and_results_read_back(fake_host, tmp_path):
    backend = two_guests(fake_host, host_memory_mib=880)  # free 20 MiB: reclaiming
    loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1, name="qemu-test")
    result = loop.run(duration_s=0.65)
    assert result.complete and result.ticks_done >= 5
    assert set(COLUMNS) == set(TOP_COLUMNS)
    for row in result.vm_rows:
        assert set(TOP_COLUMNS) <= set(row)
        assert math.isnan(row["throughput"]) and row["cpu_frac"] >= 0
    assert loop.controller.steps >= 3
    assert any(row["MCTLTGT"] > 0 for row in result.vm_rows)  # the esx policy ballooned
    assert {r["state"] for r in result.host_rows} <= {"clear", "soft", "hard", "low"}
    out = write_results(result, tmp_path / "res")
    back = read_results(out)
    assert back.complete and back.summary["scenario"] == "qemu-test"
    assert back.vms.num_rows == len(result.vm_rows)
    assert {e["event"] for e in back.events} >= {"attach", "stopped"}
    host_row, vm_rows = last_tick(result.host_rows, result.vm_rows)
    assert render_top(host_row, vm_rows, "qemu", 1.0) is not None


def test_dry_run_decides_but_applies_nothing(fake_host):
    backend = two_guests(fake_host, host_memory_mib=880)
    loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1, dry_run=True)
    loop.run(duration_s=0.45)
    assert loop.port.plans and any(p.balloon_target_mib > 0 for _, plans in loop.port.plans
                                   for p in plans.values())
    for guest in fake_host.guests.values():
        assert not [c for c, _ in guest.commands if c == "balloon"]
    assert (fake_host.ksm / "run").read_text().strip() == "0"
    assert "dry run" in loop.result.scenario.description


def test_ksm_is_restored_when_the_loop_ends(fake_host):
    backend = two_guests(fake_host, host_memory_mib=880)
    loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1)
    seen = []
    loop.run(duration_s=0.3, on_tick=lambda lp: seen.append(
        (fake_host.ksm / "run").read_text().strip()))
    assert "1" in seen  # sharing ran while the loop did
    assert (fake_host.ksm / "run").read_text().strip() == "0"
    assert (fake_host.ksm / "pages_to_scan").read_text().strip() == "100"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly(fake_host, sig):
    backend = two_guests(fake_host, host_memory_mib=880)
    loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1)
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    restore = loop.install_signal_handlers()
    try:
        def on_tick(lp):
            if lp.result.ticks_done == 0 and len(lp.result.host_rows) == 3:
                os.kill(os.getpid(), sig)

        result = loop.run(duration_s=30, on_tick=on_tick)
    finally:
        restore()
    assert len(result.host_rows) == 3
    assert result.events[-1]["detail"] == f"stopped by {sig.name}"
    assert (fake_host.ksm / "run").read_text().strip() == "0"
    assert {s: signal.getsignal(s) for s in before} == before


def test_loop_ends_when_every_guest_is_gone(fake_host):
    backend = two_guests(fake_host)
    loop = ControlLoop(backend, "static", interval_s=0.2, tick_s=0.1)

    def on_tick(lp):
        if len(lp.result.host_rows) == 2:
            fake_host.server("g1").kill()
            fake_host.server("g2").kill()

    result = loop.run(duration_s=30, on_tick=on_tick)
    assert not result.complete
    kinds = [e["event"] for e in result.events]
    assert kinds.count("guest_dropped") == 2 and kinds[-1] == "stopped"


def test_metrics_endpoint_serves_the_rows(fake_host):
    backend = two_guests(fake_host, host_memory_mib=880)
    metrics = Metrics(COLUMNS)
    metrics.serve(0)  # any free port, on 127.0.0.1
    try:
        loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1, metrics=metrics)
        loop.run(duration_s=0.35)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics.port}/metrics",
                                      timeout=5).read().decode()
    finally:
        metrics.close()
    assert 'hvmem_vm_memsz_bytes{vm="g1"} 5.36870912e+08' in text  # 512 MiB
    assert 'hvmem_host_total_bytes 9.2274688e+08' in text  # 880 MiB
    assert 'hvmem_decisions_total' in text and 'hvmem_events_total{event="attach"} 2.0' in text
    assert metric_name("SWR/s") == "hvmem_vm_swr_bytes_per_second"
    assert 'hvmem_vm_cpu_ratio{vm="g2"}' in text and "_mib" not in text
    assert any(f'hvmem_host_state{{state="{s}"}} 1.0' in text
               for s in ("clear", "soft", "hard", "low"))


def test_bad_interval_is_a_config_error(fake_host):
    from hvmem.errors import ConfigError

    backend = two_guests(fake_host)
    with pytest.raises(ConfigError, match="--interval"):
        ControlLoop(backend, "esx", interval_s=0)
    with pytest.raises(ConfigError, match="unknown policy 'nope'"):
        ControlLoop(backend, "nope")
    backend.close()


def test_tiny_budget_is_not_refused_by_simulated_admission_control(fake_host):
    for i in range(3):
        fake_host.add_guest(f"g{i}", 4001 + i, ram_rss_mib=30)
    backend = QemuBackend([fake_host.spec(f"g{i}") for i in range(3)],
                          fake_host.options(host_memory_mib=100, sample_cache_s=0.02))
    loop = ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1)
    result = loop.run(duration_s=0.25)
    assert result.complete and result.scenario.host.memory_bytes == 100 << 20
