"""The Grafana dashboard queries only metrics the controller's exporter publishes."""

import json
import re
from pathlib import Path

from prometheus_client import generate_latest

from hvmem.backends.qemu.backend import QemuBackend
from hvmem.backends.qemu.control import COLUMNS, ControlLoop
from hvmem.backends.qemu.metrics import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboards" / "hvmem-controller.json"
METRIC = re.compile(r"\bhvmem_[a-z0-9_]+\b")


def two_guests(fake_host, **opts):
    fake_host.add_guest("g1", 4001, ram_rss_mib=400)
    fake_host.add_guest("g2", 4002, ram_rss_mib=300)
    return QemuBackend([fake_host.spec("g1"), fake_host.spec("g2")],
                       fake_host.options(sample_cache_s=0.02, **opts))


def _queries(dashboard: dict) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return exprs


def _exported(fake_host) -> set[str]:
    backend = two_guests(fake_host, host_memory_mib=880)  # reclaiming: balloons, events
    metrics = Metrics(COLUMNS)
    ControlLoop(backend, "esx", interval_s=0.2, tick_s=0.1, metrics=metrics).run(duration_s=0.35)
    text = generate_latest(metrics.registry).decode()
    return {re.split(r"[{ ]", line, maxsplit=1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}


def test_every_metric_a_panel_queries_is_exported(fake_host):
    dashboard = json.loads(DASHBOARD.read_text())
    queried = {m for q in _queries(dashboard) for m in METRIC.findall(q)}
    exported = _exported(fake_host)
    assert queried, "the dashboard queries no hvmem metric"
    assert queried <= exported, sorted(queried - exported)
    # What the dashboard is for: host memory and state, balloons, KSM, cgroup limits,
    # decisions and events.
    assert {"hvmem_host_free_bytes", "hvmem_host_state", "hvmem_vm_mctlsz_bytes",
            "hvmem_host_shared_saved_bytes", "hvmem_host_ksm_pages_sharing",
            "hvmem_vm_cgroup_limit_bytes", "hvmem_decisions_total",
            "hvmem_events_total"} <= queried


def test_metric_names_follow_prometheus_conventions(fake_host):
    for name in _exported(fake_host):
        assert "_mib" not in name and "_frac" not in name, name
        if name.endswith(("_total", "_created")):
            continue  # counters (and the creation time prometheus_client adds to each)
        assert name.endswith(("_bytes", "_bytes_per_second", "_ratio", "_seconds",
                              "_pages_sharing", "_pages_to_scan", "_ksm_run", "_state",
                              "_vm_up", "_balloon_stuck")), name  # the last two: 0 or 1


def test_panels_are_well_formed():
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"]
        exprs = [t["expr"] for t in panel["targets"]]
        if all(re.search(r"_bytes\b", e) for e in exprs):
            assert panel["fieldConfig"]["defaults"]["unit"] == "bytes", panel["title"]
