"""``hvmem scenario from-traces`` and ``hvmem trace record``, end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmem.scenario.loader import load_scenario
from hvmem.sim import Simulation
from hvmem.ui.cli import app

TRACES = Path(__file__).parents[1] / "data" / "traces"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def test_from_traces_writes_a_scenario_that_runs(tmp_path):
    out = tmp_path / "host.toml"
    result = invoke("scenario", "from-traces", TRACES / "bitbrains", "--host-memory", "512MiB",
                    "--out", out, "--duration", "40s", "--time-scale", "300")
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "576MiB configured on a 512MiB host, overcommit 1.12x" in result.stdout
    scenario = load_scenario(out)
    assert [vm.memory_bytes >> 20 for vm in scenario.vms] == [256, 192, 128]
    rows = Simulation(scenario).run().vm_rows
    peak = max(r["GRANT"] for r in rows if r["vm"] == "vm-1")
    # the trace's peak, plus the guest kernel's 64 B a page of 256 MiB, in 2 MiB large pages
    assert peak == pytest.approx(192.0 + 256 * 64 / 4096, abs=4.0)


def test_from_traces_picks_the_largest_or_a_seeded_sample(tmp_path):
    out = tmp_path / "two.toml"
    assert invoke("scenario", "from-traces", TRACES / "bitbrains", "--host-memory", "1GiB",
                  "--vms", 2, "--out", out).exit_code == 0
    assert [vm.name for vm in load_scenario(out).vms] == ["vm-1", "vm-2"]
    names = []
    for _ in range(2):
        assert invoke("scenario", "from-traces", TRACES / "bitbrains", "--host-memory", "1GiB",
                      "--vms", 1, "--pick", "random", "--seed", 4, "--out", out).exit_code == 0
        names.append([vm.name for vm in load_scenario(out).vms])
    assert names[0] == names[1] and len(names[0]) == 1


@pytest.mark.parametrize(("args", "fragment"), [
    (("--vms", 9), "--vms: expected 1 to 3"),
    (("--host-memory", "lots"), "--host-memory"),
    (("--duration", "soon"), "--duration"),
])
def test_from_traces_refuses_bad_options_in_one_line(tmp_path, args, fragment):
    base = {"--host-memory": "1GiB", "--out": str(tmp_path / "x.toml")}
    pairs = dict(zip(args[::2], args[1::2], strict=True))
    argv = ["scenario", "from-traces", TRACES / "bitbrains"]
    for k, v in {**base, **pairs}.items():
        argv += [k, v]
    result = invoke(*argv)
    assert result.exit_code == 1
    assert fragment in result.stderr and result.stderr.count("\n") == 1


def test_from_traces_names_a_malformed_file_and_line(tmp_path):
    shutil.copy(TRACES / "bitbrains" / "1.csv", tmp_path / "1.csv")
    (tmp_path / "2.csv").write_text((TRACES / "bitbrains" / "2.csv").read_text().replace(
        "24576.000000", "n/a", 1))
    result = invoke("scenario", "from-traces", tmp_path, "--host-memory", "1GiB", "--out",
                    tmp_path / "x.toml")
    assert result.exit_code == 1
    assert "2.csv:2: column 'Memory usage [KB]': expected a number, found 'n/a'" in result.stderr


@pytest.mark.integration
def test_trace_record_ls_writes_a_trace_that_tlb_reads(tmp_path):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed (Debian: apt-get install valgrind)")
    trace = tmp_path / "ls.lackey"
    result = invoke("trace", "record", "--out", trace, "--", "ls", tmp_path)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    assert "records" in result.stdout and trace.stat().st_size > 0
    tlb = invoke("tlb", trace, "--json")
    assert tlb.exit_code == 0, tlb.stderr
    counts = json.loads(tlb.stdout)
    assert counts["accesses"] > 10_000 and counts["misses"] > 0
    capped = invoke("trace", "record", "--out", trace, "--max-size", "64KiB", "--", "ls")
    assert capped.exit_code == 1
    assert "reached --max-size 64KiB" in capped.stderr
    assert 0 < trace.stat().st_size <= 64 * 1024
    assert trace.read_bytes().endswith(b"\n")
    assert invoke("paging", trace, "--frames", 16, "--policy", "lru").exit_code == 0
    missing = invoke("trace", "record", "--out", trace, "--", tmp_path / "no-such-program")
    assert missing.exit_code == 1 and "nothing recorded" in missing.stderr


def test_trace_record_without_a_command_is_one_line():
    result = invoke("trace", "record", "--out", "x.lackey")
    assert result.exit_code == 1 and "no command given" in result.stderr
