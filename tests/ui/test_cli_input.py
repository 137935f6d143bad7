"""Whatever the input, the real CLI ends in one line that names the file, field or flag.

Each case goes through ``hvmem`` as a user runs it (Typer's CliRunner): exit status 1,
one ``hvmem: error:`` line on stderr, no traceback, and the line names what to change.
"""

from __future__ import annotations

import codecs
import io

import pytest
from typer.testing import CliRunner

from hvmem.scenario.work_estimate import WORK_CEILING, check_run, estimate_run
from hvmem.ui.cli import app
from hvmem.ui.progress import ProgressLine

runner = CliRunner()

SCENARIO = """\
duration = "10s"

[host]
memory = "256MiB"

[[vm]]
name = "a"
memory = "64MiB"

[vm.workload]
kind = "uniform"
region = "32MiB"
refs_per_s = 1000
"""

MACHINE = """\
[host]
memory = "64MiB"

[[vm]]
name = "vm0"
memory = "16MiB"
"""


def error_line(*args: object) -> str:
    """Run a command that must fail with exit 1 and exactly one ``hvmem: error:`` line."""
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    err = result.stderr
    assert err.startswith("hvmem: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err + result.stdout
    return err.strip()


def write(tmp_path, name: str, data: str | bytes):
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data)
    return path


def with_value(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


# --- the file itself ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "data", "said"), [
    ("latin1.toml", ("# café\n" + SCENARIO).encode("latin-1"), "not UTF-8 text (byte 0xe9 at "
                                                                "line 1, column 6)"),
    ("utf16.toml", SCENARIO.encode("utf-16"), "is UTF-16 text"),
    ("utf32.toml", SCENARIO.encode("utf-32"), "is UTF-32 text"),
    ("binary.toml", bytes(range(256)) * 4, "not UTF-8 text"),
    ("nul.toml", b"duration = \"10s\"\x00\n", "not valid TOML"),
    ("deep.toml", ("a = " + "[" * 5000 + "]" * 5000 + "\n").encode(), "nested too deeply"),
    ("deep_tables.toml", ("a = " + "{b = " * 100 + "1" + "}" * 100 + "\n").encode(),
     "nested too deeply"),
    ("digits.toml", ("seed = 1" + "0" * 5000 + "\n").encode(), "not valid TOML"),
    ("big.toml", b"# " + b"x" * (1 << 20) + b"\n", "larger than 1 MiB"),
])
def test_a_bad_scenario_file_is_one_line_naming_it(tmp_path, name, data, said):
    path = write(tmp_path, name, data)
    err = error_line("run", path, "--no-live")
    assert f"{path}: " in err
    assert said in err


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = write(tmp_path, "bom.toml", codecs.BOM_UTF8 + SCENARIO.replace(
        'refs_per_s = 1000', 'refs_per_s = -1').encode())
    # past the mark, the file is read: the error is the field's, not the encoding's
    assert "vm[0].workload.refs_per_s" in error_line("run", path, "--no-live")


def test_dev_zero_is_refused_by_its_size():
    assert error_line("run", "/dev/zero") == (
        "hvmem: error: /dev/zero: larger than 1 MiB, too large for a scenario file")


def test_a_directory_is_not_a_scenario_or_machine_file(tmp_path):
    assert "is a directory, not a scenario file" in error_line("run", tmp_path)
    assert "is a directory, not a machine file" in error_line(
        "translate", "0x400000", "--machine", tmp_path)


def test_a_file_name_too_long_is_shortened(tmp_path):
    err = error_line("run", "x" * 5000)
    assert "File name too long" in err
    assert len(err) < 300


# --- numbers too large for a float, sizes too large for this machine ---------------------------


BIG = "1" + "0" * 400  # 10**400: an integer TOML reads, no float holds


@pytest.mark.parametrize(("old", "new", "field"), [
    ('refs_per_s = 1000', f'refs_per_s = {BIG}', "vm[0].workload.refs_per_s"),
    ('refs_per_s = 1000', f'refs_per_s = 1000\nwrite_frac = {BIG}', "vm[0].workload.write_frac"),
    ('kind = "uniform"', 'kind = "zipf"\nalpha = ' + BIG, "vm[0].workload.alpha"),
    ('memory = "256MiB"', f'memory = {BIG}', "host.memory"),
    ('name = "a"', f'name = "a"\nshares = {BIG}', "vm[0].shares"),
    ('[host]', f'[policy]\nidle_tax_frac = {BIG}\n\n[host]', "policy.idle_tax_frac"),
    ('memory = "256MiB"', f'memory = "256MiB"\ncompression = {{ max_frac = {BIG} }}',
     "host.compression.max_frac"),
    ('memory = "256MiB"', f'memory = "256MiB"\nsharing = {{ scan_rate_pages_per_s = {BIG} }}',
     "host.sharing.scan_rate_pages_per_s"),
    ('[host]', f'[timing]\ntlb_hit_ns = {BIG}\n\n[host]', "timing.tlb_hit_ns"),
    ('[host]', f'[timing]\ntlb_hit_ns = "{BIG}s"\n\n[host]', "timing.tlb_hit_ns"),
    ('duration = "10s"', f'duration = "{BIG}s"', "duration"),
])
def test_integers_beyond_a_float_name_their_field(tmp_path, old, new, field):
    path = write(tmp_path, "s.toml", with_value(SCENARIO, old, new))
    err = error_line("run", path, "--no-live")
    assert f"{path}: {field}: expected" in err


def test_a_host_larger_than_this_machine_can_simulate_names_host_memory(tmp_path):
    path = write(tmp_path, "s.toml", with_value(SCENARIO, '"256MiB"', '"64TiB"'))
    err = error_line("run", path, "--no-live")
    assert f"{path}: host.memory: the simulation would need about 1.0 TiB of RAM" in err
    assert "available" in err


def test_a_machine_file_host_too_large_for_this_machine(tmp_path):
    path = write(tmp_path, "m.toml", with_value(MACHINE, '"64MiB"', '"64TiB"'))
    err = error_line("translate", "0x400000", "--machine", path)
    assert f"{path}: host.memory: the simulation would need" in err


def test_a_machine_file_vm_too_large_names_file_and_field(tmp_path):
    path = write(tmp_path, "m.toml", with_value(MACHINE, '"16MiB"', '"64TiB"'))
    err = error_line("translate", "0x400000", "--machine", path)
    assert f"{path}: vm[0].memory: expected a positive size up to 6TiB, found '64TiB'" in err


def test_a_host_too_small_to_run_names_host_memory_and_the_file(tmp_path):
    text = with_value(SCENARIO, '"256MiB"', '"64KiB"')
    path = write(tmp_path, "s.toml", with_value(text, 'memory = "64MiB"',
                                                 'memory = "64MiB"\noverhead = 0'))
    err = error_line("run", path, "--no-live", "--out", tmp_path / "out")
    assert f"{path}: host.memory: expected a host large enough" in err
    assert "frames needed" in err


# --- replay paths -------------------------------------------------------------------------------


REPLAY = """\
duration = "10s"

[host]
memory = "256MiB"

[[vm]]
name = "a"
memory = "64MiB"

[vm.workload]
kind = "replay"
refs_per_s = 1000
path = "TRACE"
"""


@pytest.mark.parametrize(("trace", "said"), [
    ("~nosuchuser/x", "whose ~ names a home directory"),
    ("a" * 5000, "File name too long"),
])
def test_a_replay_path_that_cannot_be_a_file_names_the_field(tmp_path, trace, said):
    path = write(tmp_path, "s.toml", REPLAY.replace("TRACE", trace))
    err = error_line("run", path, "--no-live")
    assert f"{path}: vm[0].workload.path: expected" in err
    assert said in err
    assert len(err) < 400


# --- flags --------------------------------------------------------------------------------------


def test_tlb_entries_beyond_a_tlb_are_refused_before_allocating(tmp_path):
    trace = write(tmp_path, "t.txt", "0x1000\n")
    assert error_line("tlb", trace, "--entries", 1 << 30).startswith(
        "hvmem: error: --entries: expected a whole number in 1..65536, found 1073741824")
    assert "--entries" in error_line("tlb", trace, "--entries", 2**62, "--ways", 2**62)
    assert "--ways" in error_line("tlb", trace, "--entries", 64, "--ways", 2**62)
    assert "--ways: expected a divisor of the 64 entries" in error_line(
        "tlb", trace, "--entries", 64, "--ways", 6)


def test_pages_with_a_format_is_an_error(tmp_path):
    trace = write(tmp_path, "t.txt", "1\n")
    for command in (("tlb",), ("paging", "--frames", 2, "--policy", "lru")):
        err = error_line(*command, trace, "--pages", "--format", "lackey")
        assert "--pages and --format lackey" in err


def test_seed_out_of_range_names_the_flag(tmp_path):
    path = write(tmp_path, "s.toml", SCENARIO)
    for command in ("run", "compare"):
        err = error_line(command, path, "--seed", -1)
        assert err.startswith("hvmem: error: --seed: expected a whole number in 0..")
        assert "Scenario" not in err
    assert "--seed" in error_line("run", path, "--seed", 2**64)


def test_an_empty_policy_is_an_error(tmp_path):
    path = write(tmp_path, "s.toml", SCENARIO)
    assert error_line("run", path, "--policy", "") == (
        "hvmem: error: --policy: expected one of esx, static, mom, proxmox, psi, found ''")


# --- work before a run --------------------------------------------------------------------------


def test_a_run_beyond_the_work_ceiling_says_how_to_go_further(tmp_path):
    text = with_value(SCENARIO, 'duration = "10s"', 'duration = "720h"\ntick = "1ms"')
    path = write(tmp_path, "s.toml", text)
    err = error_line("run", path, "--no-live")
    assert f"{path}: the run would do about" in err
    assert "a longer tick" in err and "--force" in err
    assert "--force" in error_line("compare", path)


def test_force_takes_the_ceiling_away(tmp_path):
    from hvmem.scenario.loader import load_scenario

    text = with_value(SCENARIO, 'duration = "10s"', 'duration = "720h"\ntick = "1ms"')
    scenario = load_scenario(write(tmp_path, "s.toml", text))
    assert estimate_run(scenario).work_units > WORK_CEILING
    assert check_run(scenario, force=True).work_units > WORK_CEILING


def test_the_shipped_scenarios_are_well_within_the_ceiling():
    from hvmem.scenario.loader import load_scenario
    from hvmem.scenarios import builtin_scenario_names, builtin_scenario_path

    for name in builtin_scenario_names():
        est = estimate_run(load_scenario(builtin_scenario_path(name)))
        assert est.work_units * 4 < WORK_CEILING, name


def test_mmu_fidelity_is_told_to_go_coarser(tmp_path):
    text = with_value(SCENARIO, 'duration = "10s"', 'duration = "720h"\nfidelity = "mmu"')
    text = with_value(text, "refs_per_s = 1000", "refs_per_s = 1e8")
    err = error_line("run", write(tmp_path, "s.toml", text), "--no-live")
    assert 'fidelity = "page"' in err


# --- a progress line without a terminal ---------------------------------------------------------


def test_progress_line_every_ten_seconds_of_wall_time():
    now = [0.0]
    out = io.StringIO()
    line = ProgressLine("demo-esx-seed1", 480.0, stream=out, clock=lambda: now[0])
    for step in range(1, 49):  # 48 ticks of 10 simulated s, each 2.5 s of wall time
        now[0] = step * 2.5
        line.update(step * 10.0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 12  # every 10 s of the 120 s
    assert lines[0] == ("hvmem: demo-esx-seed1: 8% (40 of 480 s simulated), 10 s elapsed, "
                        "about 110 s left")


def test_tick_progress_reads_the_simulations_clock():
    from types import SimpleNamespace

    from hvmem.ui.progress import tick_progress

    out = io.StringIO()
    now = [0.0]
    on_tick = tick_progress("demo-esx", 10**9, 480, stream=out, clock=lambda: now[0])
    on_tick(SimpleNamespace(now_ns=9 * 10**9))  # no wall time has passed: quiet
    now[0] = 11.0
    on_tick(SimpleNamespace(now_ns=239 * 10**9))
    assert out.getvalue() == ("hvmem: demo-esx: 50% (240 of 480 s simulated), 11 s elapsed, "
                              "about 11 s left\n")


@pytest.mark.parametrize(("old", "new", "said"), [
    ('duration = "10s"', 'duration = "10s"\ntick = "1ns"', "tick: expected a time from 1ms"),
    ('duration = "10s"', 'duration = "10000000h"', "duration: expected a time from 1ms to 720h"),
    ("refs_per_s = 1000", "refs_per_s = 1e15", "vm[0].workload.refs_per_s: expected a number"),
    ('[host]', f'name = "{"n" * 200}"\n\n[host]', "name: expected a name"),
])
def test_fields_that_would_hang_a_run_are_bounded(tmp_path, old, new, said):
    path = write(tmp_path, "s.toml", with_value(SCENARIO, old, new))
    assert f"{path}: {said}" in error_line("run", path, "--no-live")


@pytest.mark.parametrize("args", [
    ("bench", "translate", "--refs", 2**62),
    ("bench", "translate", "--seed", -1),
    ("bench", "guest", "--lines", 2**62),
    ("bench", "host", "--scan-pages", 2**40, "--scenario", "none"),
    ("minfree", "--memory", BIG),
])
def test_bench_counts_are_bounded_before_allocating(args):
    flag = next(a for a in args if str(a).startswith("--"))
    assert error_line(*args).startswith(f"hvmem: error: {flag}: expected")
