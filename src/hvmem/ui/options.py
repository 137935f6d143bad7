"""Command-line values checked where they are given: every error names its flag.

A flag that overrides a scenario field (``--seed``, ``--policy``) is checked
against that field's declaration here, before it reaches the scenario, so a
bad value is reported as ``--seed: expected ...`` and not as the dataclass
field it would have become (``Scenario.seed``). The TLB command's sizes are
bounded as a scenario's ``[host] tlb`` is (``HostConfig.tlb_entries``), before
anything is allocated for them.
"""

from __future__ import annotations

from hvmem.errors import ConfigError
from hvmem.params import declared, show_raw
from hvmem.policy.policies import POLICY_NAMES
from hvmem.scenario.schema import HostConfig, Scenario

__all__ = ["MAX_BENCH_COUNT", "MAX_BENCH_PAGES", "check_count", "check_field", "check_policy",
           "check_seed",
           "check_tlb", "check_trace_format"]


def check_field(flag: str, value: object, cls: type, name: str, shown: str | None = None
                ) -> None:
    """``value`` within the declaration of ``cls.name``, or an error naming ``flag``.

    ``shown`` is the value as the user wrote it (``'128GiB'``), if not ``value``.
    """
    wanted = declared(cls, name).param.problem(value)
    if wanted is not None:
        raise ConfigError(f"{flag}: expected {wanted}, found {shown or show_raw(value)}")


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """A seed override within the scenario field's bounds, or an error naming ``flag``."""
    if seed is not None:
        check_field(flag, seed, Scenario, "seed")


def scenario_of_flags(scenario_file, seed: int | None, fidelity: str | None):
    """The file and scenario ``run`` and ``compare`` run: ``--seed`` and ``--fidelity`` applied.

    ``scenario_file`` is a file, or a shipped scenario's name when no such file exists.
    """
    import dataclasses

    from hvmem.scenario.loader import load_scenario
    from hvmem.scenarios import file_or_shipped
    from hvmem.ui.aggregate_cli import with_fidelity

    check_seed(seed)
    file = file_or_shipped(scenario_file)
    scenario = load_scenario(file)
    if seed is not None:
        scenario = dataclasses.replace(scenario, seed=seed)
    return file, with_fidelity(scenario, fidelity)


def check_policy(policy: str | None, flag: str = "--policy") -> None:
    """A policy override that names a policy (an empty name too is an error)."""
    if policy is not None and policy not in POLICY_NAMES:
        raise ConfigError(f"{flag}: expected one of {', '.join(POLICY_NAMES)}, found "
                          f"{policy!r}")


def check_tlb(entries: int, ways: int) -> None:
    """TLB geometry within a scenario's bounds: entries and ways, ways dividing entries."""
    check_field("--entries", entries, HostConfig, "tlb_entries")
    check_field("--ways", ways, HostConfig, "tlb_ways")
    if ways > entries or entries % ways:
        raise ConfigError(f"--ways: expected a divisor of the {entries} entries (--entries), "
                          f"found {ways}")


def check_trace_format(pages: bool, trace_format: str) -> None:
    """``--pages`` is a format of its own: with ``--format`` other than auto, one must go."""
    if pages and trace_format != "auto":
        raise ConfigError(f"--pages and --format {trace_format}: --pages reads one page number "
                          "per line, so give one of them")


#: The longest reference stream or trace a benchmark generates (8 GB of int64 page numbers).
MAX_BENCH_COUNT = 10**9
#: The most pages a benchmark's sharing scan covers (256 GiB of simulated memory).
MAX_BENCH_PAGES = 1 << 26


def check_count(flag: str, value: int, hi: int = MAX_BENCH_COUNT) -> None:
    """A positive count up to ``hi``, or an error naming ``flag``."""
    if not 1 <= value <= hi:
        raise ConfigError(f"{flag}: expected a whole number in 1..{hi}, found {value}")
