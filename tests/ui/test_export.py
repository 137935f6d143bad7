import csv
import io
import math

import pytest
from typer.testing import CliRunner

from hvmem.results import read_results, write_results
from hvmem.sim import Simulation
from hvmem.ui.cli import app
from hvmem.ui.export import HOST_COUNTERS, PDH_TIME, VM_COUNTERS

TINY = """
name = "tiny"
duration = "4s"
seed = 3
[host]
memory = "320MiB"
profile = "esxi6"
[[vm]]
name = "a"
memory = "192MiB"
workload = { kind = "zipf", region = "176MiB", refs_per_s = 200_000 }
[[vm]]
name = "web-2"
memory = "192MiB"
workload = { kind = "uniform", region = "176MiB", refs_per_s = 200_000 }
"""

runner = CliRunner()


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    from hvmem.scenario.loader import load_scenario

    path = tmp_path_factory.mktemp("export") / "tiny.toml"
    path.write_text(TINY)
    return write_results(Simulation(load_scenario(path)).run(), path.parent / "res")


def test_esxtop_csv_has_the_perfmon_layout_of_esxtop_batch_mode(results_dir):
    out = runner.invoke(app, ["export", str(results_dir), "--format", "esxtop-csv",
                              "--start", "2024-05-01T09:00:00", "--host", "esx01"])
    assert out.exit_code == 0, out.output
    text = out.stdout_bytes.decode()
    lines = text.split("\r\n")
    assert lines[-1] == "" and len(lines) == 1 + 4 + 1  # header, one line per tick, CRLF ends
    assert all(line.startswith('"') and line.endswith('"') for line in lines[:-1])  # all quoted
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    assert header[0] == PDH_TIME == "(PDH-CSV 4.0) (UTC)(0)"
    assert header[1] == "\\\\esx01\\Memory\\Machine MBytes"
    assert "\\\\esx01\\Group Memory(1:a)\\Memory Granted Size MBytes" in header
    assert "\\\\esx01\\Group Memory(2:web-2)\\Swap Read MBytes/sec" in header
    assert len(header) == 1 + len(HOST_COUNTERS) + 2 * len(VM_COUNTERS)
    assert [r[0] for r in rows[1:]] == [f"05/01/2024 09:00:0{s}" for s in (1, 2, 3, 4)]
    assert all(len(r) == len(header) for r in rows[1:])

    res = read_results(results_dir)
    last = dict(zip(header, rows[-1], strict=True))
    host = res.host.to_pylist()[-1]
    vms = [r for r in res.vms.to_pylist() if r["time_s"] == host["time_s"]]
    free = float(last["\\\\esx01\\Memory\\Free MBytes"])
    assert free == pytest.approx(host["free_mib"], abs=0.01)
    assert float(last["\\\\esx01\\Memory\\Kernel State"]) == (
        ("high", "clear", "soft", "hard", "low").index(host["state"]))
    assert float(last["\\\\esx01\\Memory\\Swap Used MBytes"]) == pytest.approx(
        sum(v["SWCUR"] for v in vms), abs=0.01)
    a = vms[0]
    assert float(last["\\\\esx01\\Group Memory(1:a)\\Touched MBytes"]) == pytest.approx(
        a["TCHD"], abs=0.01)
    assert float(last["\\\\esx01\\Group Memory(1:a)\\% Active Estimate"]) == pytest.approx(
        100 * a["ACTV"] / a["MEMSZ"], abs=0.01)


def test_tidy_csv_is_one_row_per_vm_and_tick_with_the_hosts_figures(results_dir):
    out = runner.invoke(app, ["export", str(results_dir), "--format", "csv"])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    res = read_results(results_dir)
    assert len(rows) == res.vms.num_rows == 8
    assert {"time_s", "vm", "MEMSZ", "SWR/s", "throughput", "host_free_mib",
            "host_state"} <= set(rows[0])
    first = res.vms.to_pylist()[0]
    assert rows[0]["vm"] == first["vm"] and float(rows[0]["GRANT"]) == first["GRANT"]
    assert rows[0]["host_state"] == res.host.to_pylist()[0]["state"]


def test_out_writes_a_file_and_never_replaces_one_unasked(results_dir, tmp_path):
    target = tmp_path / "run.csv"
    assert runner.invoke(app, ["export", str(results_dir), "--out", str(target)]).exit_code == 0
    first = target.read_bytes()
    assert first.startswith(b'"(PDH-CSV 4.0) (UTC)(0)"') and b"\r\n" in first
    out = runner.invoke(app, ["export", str(results_dir), "--out", str(target), "--format", "csv"])
    assert out.exit_code == 1 and "exists; --force replaces it" in out.output
    assert target.read_bytes() == first
    out = runner.invoke(app, ["export", str(results_dir), "--out", str(target), "--format", "csv",
                              "--force"])
    assert out.exit_code == 0 and target.read_text().startswith("time_s,")
    assert [p.name for p in tmp_path.iterdir()] == ["run.csv"]


@pytest.mark.parametrize("args, message", [
    (["--start", "yesterday"], "--start 'yesterday'"),
    (["--host", "a\\b"], "--host 'a\\\\b'"),
])
def test_bad_options_are_one_line(results_dir, args, message):
    out = runner.invoke(app, ["export", str(results_dir), *args])
    assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output


def test_a_vm_that_is_off_has_empty_cells(tmp_path):
    from hvmem.ui.export import write_esxtop_csv

    host = {"time_s": 0.0, "tick_s": 1.0, "total_mib": 100.0, "free_mib": 10.0,
            "minfree_mib": 1.0, "state": "high"}
    vm = {c: 1.0 for _, c in VM_COUNTERS} | {"ACTV": 1.0, "MEMSZ": 4.0, "ZIPPED": 0.0,
                                             "time_s": 0.0, "vm": "a"}
    later = dict(host, time_s=1.0)
    text = io.StringIO(newline="")
    from datetime import UTC, datetime
    write_esxtop_csv(text, [host, later], [vm, dict(vm, time_s=0.0, vm="b", SWCUR=math.nan)],
                     datetime(2024, 1, 1, tzinfo=UTC))
    rows = list(csv.reader(io.StringIO(text.getvalue())))
    header, first, second = rows
    cells = dict(zip(header, second, strict=True))
    assert cells["\\\\hvmem\\Group Memory(1:a)\\Memory Size MBytes"] == ""
    assert dict(zip(header, first, strict=True))[
        "\\\\hvmem\\Group Memory(2:b)\\Swapped MBytes"] == ""
    assert dict(zip(header, first, strict=True))[
        "\\\\hvmem\\Group Memory(1:a)\\% Active Estimate"] == "25.00"
