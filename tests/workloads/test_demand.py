"""Demand workloads and the usage-trace readers: formats, malformed rows, the curve followed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hvmem.errors import ConfigError, TraceError
from hvmem.units import MIB, PAGE_SHIFT
from hvmem.workloads.base import MemoryOpKind
from hvmem.workloads.demand import DemandParams, DemandWorkload
from hvmem.workloads.trace_formats import detect_format, read_demand_trace

NS = 10**9
TRACES = Path(__file__).parents[1] / "data" / "traces"


@pytest.mark.parametrize(("name", "fmt"), [
    ("bitbrains/1.csv", "bitbrains"), ("alibaba_machine_usage.csv", "alibaba"),
    ("alibaba_container_usage.csv", "alibaba"), ("google_instance_usage.json", "google"),
    ("google_instance_usage.csv", "google"), ("plain.csv", "csv"), ("columns.csv", "csv"),
])
def test_each_fixture_is_detected_as_its_format(name, fmt):
    assert detect_format(str(TRACES / name)) == fmt


def test_bitbrains_reads_epoch_seconds_kib_and_the_provisioned_size():
    tr = read_demand_trace(TRACES / "bitbrains" / "1.csv")
    assert len(tr) == 48
    assert np.allclose(np.diff(tr.time_s), 300.0)  # epoch seconds under "Timestamp [ms]"
    assert tr.provisioned_bytes == 256 * MIB
    assert tr.usage_bytes[0] == pytest.approx(32 * MIB)
    assert tr.usage_bytes.max() == pytest.approx(192 * MIB, rel=1e-3)


def test_alibaba_takes_one_machine_sorts_and_skips_empty_usage():
    tr = read_demand_trace(TRACES / "alibaba_machine_usage.csv", trace_memory_bytes=100 * MIB)
    assert tr.trace_id == "m_1932"
    assert np.all(np.diff(tr.time_s) > 0)
    assert any("out of time order" in n for n in tr.notes)
    assert any("empty usage" in n for n in tr.notes)
    assert tr.usage_bytes[0] == pytest.approx(60 * MIB)  # 60 % of 100 MiB
    other = read_demand_trace(TRACES / "alibaba_machine_usage.csv", trace_id="m_1933",
                              trace_memory_bytes=100 * MIB)
    assert other.usage_bytes.max() == pytest.approx(22 * MIB)
    with pytest.raises(TraceError, match="no series 'm_9'"):
        read_demand_trace(TRACES / "alibaba_machine_usage.csv", trace_id="m_9",
                          trace_memory_bytes=MIB)
    container = read_demand_trace(TRACES / "alibaba_container_usage.csv",
                                  default_memory_bytes=100 * MIB)
    assert container.trace_id == "c_10" and container.usage_bytes[0] == pytest.approx(30 * MIB)


def test_percent_usage_needs_a_memory_size():
    with pytest.raises(ConfigError, match="state trace_memory"):
        read_demand_trace(TRACES / "alibaba_machine_usage.csv")


def test_google_json_and_csv_read_alike_in_microseconds_and_normalised_memory():
    size = 64 << 30
    js = read_demand_trace(TRACES / "google_instance_usage.json", trace_memory_bytes=size)
    cs = read_demand_trace(TRACES / "google_instance_usage.csv", trace_memory_bytes=size)
    assert js.trace_id == "375719431:0"
    assert np.allclose(js.time_s, cs.time_s) and np.allclose(js.usage_bytes, cs.usage_bytes)
    assert js.time_s[1] == pytest.approx(300.0)
    assert js.usage_bytes[0] == pytest.approx(0.02 * size)
    peak = read_demand_trace(TRACES / "google_instance_usage.json", trace_memory_bytes=size,
                             usage_column="maximum_usage.memory", trace_id="375719431:1")
    assert peak.usage_bytes[0] == pytest.approx(0.04 * size)


@pytest.mark.parametrize(("text", "fragment"), [
    ("time_s,mem_mib\n0,16\n10,lots\n", ":3: column 'mem_mib': expected a number, found 'lots'"),
    ("time_s,mem_mib\n0,16\n10\n", ":3: column 'mem_mib': missing"),
    ("time_s,mem_mib\n0,-4\n", ":2: column 'mem_mib': expected a finite number >= 0"),
    ("seconds,mem_mib\n0,16\n", ":1: no column 'time_s'"),
    ("time_s,rss\n0,16\n", "the unit of column 'rss' is not in its name"),
])
def test_malformed_rows_name_file_line_and_column(tmp_path, text, fragment):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises((TraceError, ConfigError)) as info:
        read_demand_trace(path, usage_column="rss" if "rss" in text else None)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_repeated_timestamps_are_averaged_and_gaps_reported(tmp_path):
    path = tmp_path / "gaps.csv"
    path.write_text("time_s,mem_mib\n0,10\n0,20\n10,30\n20,30\n30,30\n400,30\n")
    tr = read_demand_trace(path)
    assert tr.usage_bytes[0] == pytest.approx(15 * MIB)
    assert any("averaged" in n for n in tr.notes)
    assert any("longest gap 370 s" in n for n in tr.notes)


def _workload(path, **kw) -> DemandWorkload:
    params = DemandParams(path=str(path), region_pages=kw.pop("region_pages", 65536), **kw)
    return DemandWorkload(params, np.random.default_rng(3))


def test_touched_memory_follows_a_bitbrains_curve():
    """The pages touched, tick by tick, correlate with the file's usage (the known curve)."""
    wl = _workload(TRACES / "bitbrains" / "1.csv", time_scale=300.0, free_frac=1.0,
                   refs_per_s=50_000)
    assert wl.setup()[0].n_pages == 65536
    touched = []
    for k in range(48):
        batch = wl.next_batch(k * NS, NS)
        touched.append(int(batch.vpn.max() - wl.params.first_vpn + 1) if len(batch) else 0)
    curve = read_demand_trace(TRACES / "bitbrains" / "1.csv").usage_bytes / (1 << PAGE_SHIFT)
    r = np.corrcoef(np.array(touched, dtype=float), curve)[0, 1]
    assert r > 0.99
    assert wl.freed_pages > 0  # the fall was freed (free_frac 1)


def test_a_fall_keeps_pages_idle_or_frees_a_share():
    kept = _workload(TRACES / "plain.csv", time_scale=10.0)
    freed = _workload(TRACES / "plain.csv", time_scale=10.0, free_frac=0.5)
    ops = []
    for k in range(10):
        kept.next_batch(k * NS, NS)
        ops.extend(freed.next_batch(k * NS, NS).ops)
    assert kept.allocated_pages == 128 * 256 and kept.working_set_pages == 16 * 256
    assert freed.freed_pages == pytest.approx(0.5 * (128 - 16) * 256, abs=1)
    assert [op.kind for op in ops[:2]] == [MemoryOpKind.UNMAP, MemoryOpKind.MAP]


def test_mmu_fidelity_gives_one_entry_per_reference():
    wl = _workload(TRACES / "plain.csv", fidelity="mmu", refs_per_s=1000)
    batch = wl.next_batch(0, NS)
    assert len(batch) == 16 * 256 + 1000 and batch.n_refs == len(batch)


def test_offset_past_the_end_and_usage_above_the_region_are_refused():
    with pytest.raises(ConfigError, match="past the trace's end"):
        _workload(TRACES / "plain.csv", offset_s=1000.0)
    with pytest.raises(ConfigError, match=r"plain\.csv:6: usage 128MiB is above"):
        _workload(TRACES / "plain.csv", region_pages=100 * 256)
    clipped = _workload(TRACES / "plain.csv", region_pages=100 * 256, over="clip")
    assert max(clipped.demand_pages(s) for s in range(0, 130, 10)) == 100 * 256


def test_shape_needs_both_ends_in_order():
    with pytest.raises(ConfigError, match="shape_max_frac"):
        DemandParams(path="x", shape_min_frac=0.2)
    with pytest.raises(ConfigError, match="at least shape_min_frac"):
        DemandParams(path="x", shape_min_frac=0.6, shape_max_frac=0.5)
