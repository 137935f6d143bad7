"""A scenario's scheduled events as a run meets them (``scenario/events.py`` says what they are).

:class:`EventSchedule` keeps the events in time order (file order within one
time) and the run's *live* configuration: the policy, the host and each VM as
the events so far have changed them. The simulation asks it for the events due
at the start of each tick, before the VMs run, and carries each out on itself
(:meth:`hvmem.sim.Simulation` ``_run_event``): a changed policy configuration
becomes the policy's parameters, a changed VM configuration the running VM's,
a changed host the scanner's and the backend's. The checks ran when the
scenario loaded (:func:`~hvmem.scenario.events.check_events`), so nothing here
can fail on a value.
"""

from __future__ import annotations

from typing import Any

from hvmem.scenario.events import EventConfig, apply_set, initial_parts, write_set
from hvmem.scenario.schema import HostConfig, Scenario, VmConfig

__all__ = ["EventSchedule", "describe", "latest_note"]


class EventSchedule:
    """The events of a run still to come, and the configuration the past ones left."""

    def __init__(self, scenario: Scenario) -> None:
        order = sorted(range(len(scenario.events)), key=lambda i: scenario.events[i].at_ns)
        self._pending = [scenario.events[i] for i in order]
        self._next = 0
        self.parts: dict[str, Any] = initial_parts(scenario)

    def due(self, now_ns: int) -> list[EventConfig]:
        """The events whose time has come by ``now_ns``, in order (each returned once)."""
        start = self._next
        while self._next < len(self._pending) and self._pending[self._next].at_ns <= now_ns:
            self._next += 1
        return self._pending[start:self._next]

    def quiet_until(self) -> float:
        """The time of the next event still to come (``inf`` if none is)."""
        if self._next < len(self._pending):
            return self._pending[self._next].at_ns
        return float("inf")

    def set(self, path: str, value: Any) -> str:
        """Apply one change to the live configuration; returns the part it changed."""
        apply_set(None, self.parts, path, value)
        return "vm" if path.startswith("vm.") else path.split(".")[0]

    def vm(self, name: str) -> VmConfig:
        """The VM's configuration as the events so far left it."""
        return self.parts[f"vm.{name}"]

    def replace_vm(self, config: VmConfig) -> None:
        """The VM's configuration changes otherwise than by ``set`` (powered on again)."""
        self.parts[f"vm.{config.name}"] = config

    @property
    def host(self) -> HostConfig:
        """The host's configuration as the events so far left it."""
        return self.parts["host"]

    @property
    def policy(self) -> Any:
        """The policy's configuration as the events so far left it."""
        return self.parts["policy"]


def describe(event: EventConfig, scenario: Scenario) -> str:
    """One line for the events log and the live view (values as a file writes them)."""
    words = [f"{path} = {value}" for path, value in write_set(scenario, event.changes).items()]
    if event.power is not None:
        words.append(f"power {event.power}")
    if event.phase is not None:
        words.append(f"phase {event.phase}")
    return ", ".join(words)


def latest_note(events: list[dict]) -> str:
    """The latest scheduled event of a run's events, for the live view's first line."""
    for event in reversed(events):
        if event["event"] == "scheduled":
            return f"   event at {event['time_s']:.0f} s: {event['detail']}"
    return ""
