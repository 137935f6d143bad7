"""Scheduled changes: a scenario's ``[[event]]`` tables, checked on load and applied as it runs.

What is modelled
----------------
ESX recomputes its allocations whenever an administrator changes a VM's
reservation, limit or shares, whenever a VM powers on or off, and whenever
the host's settings change [OSDI02 §6.3]. The idle memory tax was first shown
that way: two VMs with equal shares run with the tax at 0 %, and the tax is
raised to 75 % while they run, upon which memory moves from the idle VM to
the busy one [OSDI02 §5.4, Fig. 7]. An event does one of those at a time of
the run::

    [[event]]
    at = "31min"
    set = { "policy.idle_tax_frac" = 0.75, "vm.web.limit" = "1GiB" }

    [[event]]
    at = "40min"
    vm = "batch"
    power = "off"              # or "on": a VM that is off powers on (admission control)

    [[event]]
    at = "10min"
    vm = "db"
    phase = 2                  # the VM's phased workload starts its phase 2 now

``set`` names scenario fields by dotted path, a VM's as ``vm.NAME.KEY``; only
the fields in :data:`RUNTIME_FIELDS` change at run time (what ESX lets an
administrator change on a running host); any other is refused when the
scenario loads, as is a VM no ``[[vm]]`` table names, a value its field would
refuse, or a change that breaks a rule between fields (a limit below the
reservation). Values are written as in the field's own table (sizes as
``"1GiB"``, shares as ``"high"`` or a number).

Events of one time apply in file order, at the start of the tick at or after
their time, before the VMs run (an event at or after the run's end never
happens, so a run cut short keeps its events): a tax switched on at 31 min is in the plan of
the first balance period after it. Each is recorded in the run's events
(``events.jsonl``, the live view's last event line).

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hvmem.errors import ConfigError
from hvmem.params import Kind, Param, check, choice, declared, show_raw, text, time, whole
from hvmem.units import NS_PER_S

__all__ = ["POWER", "RUNTIME_FIELDS", "SET", "EventConfig", "apply_set", "check_events",
           "initial_parts", "read_set", "write_set"]

#: ``power`` of an event.
POWER = ("on", "off")
#: Fields an event may set: dotted path (``*`` a VM's name) -> (the part of the
#: scenario that holds it, its field name there).
RUNTIME_FIELDS: Mapping[str, tuple[str, str]] = {
    "policy.idle_tax_frac": ("policy", "idle_tax_frac"),
    "host.sharing.enabled": ("host.sharing", "enabled"),
    "host.sharing.scan_rate_pages_per_s": ("host.sharing", "scan_rate_pages_per_s"),
    "host.sharing.scan_total_pages_per_s": ("host.sharing", "scan_total_pages_per_s"),
    "vm.*.limit": ("vm", "limit_bytes"),
    "vm.*.reservation": ("vm", "reservation_bytes"),
    "vm.*.shares": ("vm", "shares"),
}
#: ``set`` of an event: a loader's key, not a field (its values take their fields' kinds).
SET = Param(kind=Kind.TABLE, doc="fields to change: dotted path = value (policy.idle_tax_frac, "
            "host.sharing.enabled, host.sharing.scan_rate_pages_per_s, "
            "host.sharing.scan_total_pages_per_s, vm.NAME.limit, vm.NAME.reservation, "
            "vm.NAME.shares)", default=None, optional=True, none="nothing",
            expect="a table of dotted field paths and values")
_MAX_RUN_NS = 30 * 86400 * NS_PER_S


@dataclass(frozen=True, slots=True, kw_only=True)
class EventConfig:
    """One scheduled change: fields set, a VM powered on or off, or a phase started.

    ``changes`` holds ``(path, value)`` pairs with stored values (bytes, not
    ``"1GiB"``); :func:`read_set` makes them from a file's ``set`` table.
    """

    at_ns: int = time(0, "when it happens", lo=0, hi=_MAX_RUN_NS, required=True)
    vm: str | None = text(None, "the VM that powers on or off or starts a phase", optional=True,
                          none="none", pattern=r".+", expect="a VM's name")
    power: str | None = choice(None, POWER, "power the VM \"on\" or \"off\"", optional=True,
                               none="no change")
    phase: int | None = whole(None, "start this phase (0 is the first) of the VM's phased "
                              "workload", lo=0, hi=1 << 16, optional=True, none="no change")
    changes: tuple[tuple[str, Any], ...] = text((), "fields to change", key=None,
                                                owner="event[].set")

    def __post_init__(self) -> None:
        check(self, skip=("changes",))
        if (self.power is not None or self.phase is not None) and self.vm is None:
            raise ConfigError("expected the VM's name (vm = \"NAME\") for power or phase, "
                              "found none", path=("EventConfig", "vm"))
        if self.vm is not None and self.power is None and self.phase is None:
            raise ConfigError("expected power or phase with a vm, found neither",
                              path=("EventConfig", "vm"))
        if not (self.changes or self.power or self.phase is not None):
            raise ConfigError("expected set, power or phase: an event that changes "
                              "something, found none", path=("EventConfig", "set"))


def _template(path: str) -> tuple[str, str | None]:
    """The RUNTIME_FIELDS key of a dotted path, and the VM it names (None: not a VM's)."""
    parts = path.split(".")
    if parts[0] == "vm" and len(parts) >= 3:
        return f"vm.*.{parts[-1]}", ".".join(parts[1:-1])
    return path, None


def _param(scenario: Any, path: str) -> tuple[Any, str, Param]:
    """(the object holding ``path``, its field name, its declaration) in ``scenario``."""
    template, vm = _template(path)
    if template not in RUNTIME_FIELDS:
        known = ", ".join(k.replace("*", "NAME") for k in RUNTIME_FIELDS)
        raise ConfigError(f"expected a field that can change while the VMs run ({known}), "
                          f"found {path!r}")
    part, name = RUNTIME_FIELDS[template]
    if part == "vm":
        holder = _vm(scenario, vm or "")
    else:
        holder = scenario
        for attr in part.split("."):
            holder = getattr(holder, attr)
    return holder, name, declared(type(holder), name).param


def _vm(scenario: Any, name: str) -> Any:
    for vm in scenario.vms:
        if vm.name == name:
            return vm
    names = ", ".join(vm.name for vm in scenario.vms)
    raise ConfigError(f"expected the name of a VM of the scenario ({names}), found {name!r}")


def read_set(scenario: Any, raw: Any) -> tuple[tuple[str, Any], ...]:
    """A file's ``set`` table as ``(path, stored value)`` pairs, each checked by its field.

    Raises:
        ConfigError: at ``(path,)``: a field that cannot change at run time, a VM
            that does not exist, or a value the field refuses.
    """
    if not isinstance(raw, Mapping):
        raise ConfigError(f"expected {SET.expect}, found {show_raw(raw)}")
    out = []
    for path, value in raw.items():
        try:
            _, _, param = _param(scenario, path)
            stored = param.load(value)
            levels_ok = param.levels and isinstance(stored, str) and stored in param.levels
            problem = None if levels_ok else param.problem(stored)
            if problem is not None:
                raise ConfigError(f"expected {problem}, found {show_raw(value)}")
        except ConfigError as err:
            raise ConfigError(err.message, path=(path,)) from None
        out.append((path, stored))
    return tuple(out)


def write_set(scenario: Any, changes: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """``changes`` as a file's ``set`` table (values as their fields write them)."""
    out = {}
    for path, value in changes:
        _, _, param = _param(scenario, path)
        dumped = param.dump(value)
        out[path] = param.none_word if dumped is None else dumped
    return out


def apply_set(scenario: Any, parts: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value`` in ``parts`` (``"policy"``, ``"host"``, ``"vm.NAME"``).

    ``parts`` holds the scenario's current policy, host and VM configurations;
    the changed one is rebuilt with ``dataclasses.replace``, so its own checks
    and rules run again.

    Raises:
        ConfigError: the changed configuration breaks a rule (no path).
    """
    template, vm = _template(path)
    part, name = RUNTIME_FIELDS[template]
    if part == "vm":
        key = f"vm.{vm}"
        parts[key] = replace(parts[key], **{name: value})
    elif part == "policy":
        parts["policy"] = replace(parts["policy"], **{name: value})
    else:  # host.sharing
        host = parts["host"]
        parts["host"] = replace(host, sharing=replace(host.sharing, **{name: value}))


def initial_parts(scenario: Any) -> dict[str, Any]:
    """The parts of ``scenario`` an event may change, by :func:`apply_set`'s keys."""
    parts: dict[str, Any] = {"policy": scenario.policy, "host": scenario.host}
    parts.update({f"vm.{vm.name}": vm for vm in scenario.vms})
    return parts


def check_events(scenario: Any) -> None:
    """Check every event against the scenario, applying them in time order.

    Raises:
        ConfigError: at ``("event", i, ...)``: an unknown VM, a phase the VM's
            workload does not have, a field that cannot change at run time, or a
            change that breaks a rule.
    """
    parts = initial_parts(scenario)
    order = sorted(range(len(scenario.events)), key=lambda i: scenario.events[i].at_ns)
    for i in order:
        event = scenario.events[i]
        where = ("event", i)  # the TOML path already: no field of Scenario holds it
        if not isinstance(event, EventConfig):
            raise ConfigError(f"expected an EventConfig, found {type(event).__name__}",
                              path=where)
        if event.vm is not None:
            try:
                vm = _vm(scenario, event.vm)
            except ConfigError as err:
                raise ConfigError(err.message, path=(*where, "vm")) from None
            if event.phase is not None:
                phases = getattr(vm.workload, "phases", None)
                if phases is None or event.phase >= len(phases):
                    have = (f"0..{len(phases) - 1}" if phases else
                            "none: its workload is not phased")
                    raise ConfigError(f"expected a phase of {event.vm}'s workload ({have}), "
                                      f"found {event.phase}", path=(*where, "phase"))
        for path, value in event.changes:
            try:
                _param(scenario, path)
                apply_set(scenario, parts, path, value)
            except ConfigError as err:
                raise ConfigError(err.message, path=(*where, "set", path)) from None
