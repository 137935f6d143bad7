"""Experiment files: expanded into every combination x seed, each checked before any run."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmem.errors import ConfigError
from hvmem.scenario.loader import load_scenario
from hvmem.scenarios import builtin_scenario_path
from hvmem.sweep.experiment import load_experiment, policy_runs

TINY = """
name = "tiny"
duration = "2s"
[host]
memory = "320MiB"
[policy]
name = "esx"
[policy.params]
swap_out_mib_s = 100
[[vm]]
name = "a"
memory = "192MiB"
workload = { kind = "zipf", region = "176MiB", refs_per_s = 1000 }
[[vm]]
name = "b"
memory = "64MiB"
"""


def experiment(tmp_path: Path, text: str) -> Path:
    (tmp_path / "tiny.toml").write_text(TINY)
    path = tmp_path / "exp.toml"
    path.write_text(text)
    return path


def test_every_combination_times_every_seed_is_one_run(tmp_path):
    exp = load_experiment(experiment(tmp_path, """
        scenario = "tiny.toml"
        seeds = 3
        [grid]
        "policy.name" = ["esx", "static"]
        "vm.*.shares" = ["normal", "high"]
        "fidelity" = ["page"]
    """))
    assert exp.name == "exp" and exp.seeds == (1, 2, 3)
    assert len(exp.runs) == 2 * 2 * 1 * 3
    assert exp.runs[0].rel_dir == "runs/policy.name=esx,vm.-.shares=normal,fidelity=page/seed=1"
    assert len({r.rel_dir for r in exp.runs}) == 12
    for run in exp.runs:
        assert run.scenario.seed == run.seed
        assert run.scenario.policy.name == run.params["policy.name"]
    shares = {r.params["vm.*.shares"]: [vm.shares for vm in r.scenario.vms] for r in exp.runs}
    assert shares["normal"] == [vm.shares for vm in load_scenario(tmp_path / "tiny.toml").vms]
    assert all(h > n for h, n in zip(shares["high"], shares["normal"], strict=True))
    # The base's [policy.params] are esx's: kept for esx, dropped for another policy.
    esx, static = exp.runs[0].scenario.policy, exp.runs[6].scenario.policy
    assert esx.params is not None and static.name == "static"
    assert static == load_scenario(tmp_path / "tiny.toml").policy.for_policy("static")
    record = exp.record("9.9")
    assert record["hvmem_version"] == "9.9" and len(record["runs"]) == 12
    assert record["grid"]["policy.name"] == ["esx", "static"]


def test_seeds_as_a_list_a_vm_by_name_and_a_shipped_scenario(tmp_path):
    path = tmp_path / "exp.toml"
    path.write_text('scenario = "demo"\nseeds = [7, 3]\n[grid]\n"vm.web.limit" = ["1GiB"]\n')
    exp = load_experiment(path)
    assert exp.scenario_file == builtin_scenario_path("demo")
    assert [r.seed for r in exp.runs] == [7, 3]
    web = next(vm for vm in exp.runs[0].scenario.vms if vm.name == "web")
    assert web.limit_bytes == 1 << 30


def test_compare_is_a_one_seed_sweep_over_policies(tmp_path):
    scenario = load_scenario(experiment(tmp_path, "").parent / "tiny.toml")
    runs = policy_runs(scenario, ["esx", "mom"])
    assert [r.combination for r in runs] == ["policy.name=esx", "policy.name=mom"]
    assert [r.seed for r in runs] == [scenario.seed] * 2
    assert runs[0].scenario == scenario
    assert runs[1].scenario.policy == scenario.policy.for_policy("mom")


@pytest.mark.parametrize(("text", "message"), [
    ('scenario = "tiny.toml"\nseedz = 2', "exp.toml: seedz: unknown key"),
    ('seeds = 2', "exp.toml: scenario: expected a shipped scenario's name"),
    ('scenario = "nope"', "exp.toml: scenario: expected a shipped scenario (bench-32vm"),
    ('scenario = "tiny.toml"\nseeds = 0', "exp.toml: seeds: expected a count of seeds in 1.."),
    ('scenario = "tiny.toml"\nseeds = [1, 1]', "exp.toml: seeds: expected distinct seeds"),
    ('scenario = "tiny.toml"\nseeds = [-1]', "exp.toml: seeds: expected seeds that are each"),
    ('scenario = "tiny.toml"\ngrid = 3', "exp.toml: grid: expected a table"),
    ('scenario = "tiny.toml"\n[grid]\n"policy.name" = "esx"',
     'exp.toml: grid."policy.name": expected a non-empty list'),
    ('scenario = "tiny.toml"\n[grid]\n"policy.nme" = ["esx"]',
     'exp.toml: grid: "policy.nme" = \'esx\': unknown field (did you mean \'name\'?)'),
    ('scenario = "tiny.toml"\n[grid]\n"host.memory" = ["320MiB", "1EiB"]',
     'exp.toml: grid: "host.memory" = \'1EiB\': unknown size unit'),
    ('scenario = "tiny.toml"\n[grid]\n"policy.name" = ["esx", "drs"]',
     'exp.toml: grid: "policy.name" = \'drs\': expected one of'),
    ('scenario = "tiny.toml"\n[grid]\n"fidelity" = ["page", "exact"]',
     'exp.toml: grid: "fidelity" = \'exact\': expected'),
    ('scenario = "tiny.toml"\n[grid]\n"vm.c.shares" = ["high"]',
     "exp.toml: grid.\"vm.c.shares\": no [[vm]] table named 'c'"),
    ('scenario = "tiny.toml"\n[grid]\n"duration.x" = [1]',
     'exp.toml: grid."duration.x": duration is \'2s\' in the scenario, not a table'),
    ('scenario = "tiny.toml"\n[grid]\n"seed" = [1]', "exp.toml: grid.\"seed\": the seed is"),
    ('scenario = "tiny.toml"\n[grid]\n"vm.a.limit" = ["50MiB"]\n"vm.a.reservation" = ["100MiB"]',
     "exp.toml: grid: \"vm.a.limit\" = '50MiB'"),
])
def test_a_bad_experiment_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_experiment(experiment(tmp_path, text))
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(str(tmp_path / message.split(":")[0])), line
    assert message.split(": ", 1)[1] in line, line
