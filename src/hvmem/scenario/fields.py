"""Every key a scenario file may hold, with its declaration, in the order of a file.

:func:`scenario_fields` walks the declarations (:mod:`hvmem.params`) from
:class:`~hvmem.scenario.schema.Scenario` down, entering each table; where a
table's class depends on a value (a workload's ``kind``, a policy's ``name``)
it walks every choice, and says which in ``when``. ``docs/scenario.md`` is
rendered from this list (:mod:`hvmem.scenario.docs`), and tests walk it to
reach every field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hvmem.params import Declared, Kind, Param, declarations
from hvmem.policy.policies import POLICIES
from hvmem.scenario.events import SET, EventConfig
from hvmem.scenario.loader import COUNT
from hvmem.scenario.schema import PolicyConfig, Scenario, VmConfig
from hvmem.scenario.workload_table import GENERATOR_KINDS, KIND, WORKLOAD_KINDS
from hvmem.workloads.synthetic import Phase, PhasesParams

__all__ = ["ScenarioField", "scenario_fields"]

# A phase either resizes the base generator (working_set) or runs its own.
_PHASE_KIND = Param(kind=Kind.CHOICE, choices=GENERATOR_KINDS, default=None, optional=True,
                    none="a working_set phase",
                    doc="or the phase's own generator: its kind, that kind's keys, a region "
                        "(default: the rest of the phased region) and the offset")


@dataclass(frozen=True, slots=True)
class ScenarioField:
    """One key of a scenario file.

    Attributes:
        table: the TOML table it sits in (``""`` the top, ``host.sharing``;
            ``vm[]`` is each ``[[vm]]`` table).
        key: its key in that table (``tlb.entries``: in an inline ``tlb`` table).
        when: the condition under which the key exists (``kind = "zipf"``), or "".
        owner: the class that declares it (None: a key of the loader's own).
        name: the field it sets ("" for the loader's own keys).
        param: its declaration.
    """

    table: str
    key: str
    when: str
    owner: type | None
    name: str
    param: Param

    @property
    def path(self) -> str:
        """The TOML path (``vm[].workload.alpha``)."""
        return f"{self.table}.{self.key}" if self.table else self.key


def _join(table: str, key: str) -> str:
    return f"{table}.{key}" if table else key


def _fields(cls: type, table: str, when: str, *,
            skip: tuple[str, ...] = ()) -> Iterator[ScenarioField]:
    """The keys of one table of ``cls``: its own first, then its nested tables'."""
    nested: list[Declared] = []
    for d in declarations(cls):
        if d.key is None or d.name in skip:
            continue
        p = d.param
        if p.kind is Kind.TABLE and d.key == "" and isinstance(p.table, type):
            yield from _fields(p.table, table, when)
        elif p.kind is Kind.TABLE:
            nested.append(d)
        else:
            yield ScenarioField(table, d.key, when, cls, d.name, p)
        if cls is VmConfig and d.name == "name":
            yield ScenarioField(table, "count", when, None, "", COUNT)
        if cls is EventConfig and d.name == "at_ns":
            yield ScenarioField(table, "set", when, None, "", SET)
    for d in nested:
        sub = _join(table, d.key or "")
        if cls is VmConfig and d.name == "workload":
            yield from _workloads(sub)
        elif cls is PolicyConfig and d.name == "params":
            yield from _policy_params(sub)
        elif isinstance(d.param.table, type):
            yield from _fields(d.param.table, sub + ("[]" if d.param.array else ""), when)


def _workloads(table: str) -> Iterator[ScenarioField]:
    yield ScenarioField(table, "kind", "", None, "", KIND)
    for kind, cls in WORKLOAD_KINDS.items():
        when = f'kind = "{kind}"'
        if cls is PhasesParams:
            yield from _fields(cls, table, when, skip=("phases", "base"))
            for d in declarations(PhasesParams):
                if d.name == "base":
                    yield ScenarioField(table, "base", when, cls, d.name, d.param)
            phases = _join(table, "phases[]")
            for d in declarations(Phase):
                if d.key:
                    yield ScenarioField(phases, d.key, when, Phase, d.name, d.param)
                elif d.key == "":  # the phase's own generator: its kind, then its keys
                    yield ScenarioField(phases, "kind", when, Phase, d.name, _PHASE_KIND)
        else:
            yield from _fields(cls, table, when)


def _policy_params(table: str) -> Iterator[ScenarioField]:
    for name, cls in POLICIES.items():
        kind = cls.params_type
        if kind is not type(None):
            yield from _fields(kind, table, f'name = "{name}"')


def scenario_fields() -> Iterator[ScenarioField]:
    """Every key a scenario file may hold, table by table, in declaration order."""
    yield from _fields(Scenario, "", "")
