"""Statistics: event tallies kept apart from time-weighted levels.

Two kinds of number come out of a memory simulation, and they must not be
mixed up (salabim's lesson, via its ``Monitor(level=True)``):

* a **tally** (:class:`Counter`) counts events: faults taken, pages shared,
  pages a scan rejected because they were zero. It only grows; its rate is
  ``delta / delta_t`` between two snapshots. Counters are integers.
* a **level** (:class:`Level`) is a quantity held over time: free memory, a VM's
  balloon size, the number of shared frames. Its meaningful summary is the
  *time-weighted* average (a level of 1000 pages for 9 s and 0 for 1 s averages
  900, whatever the number of updates), together with its minimum and maximum.

Every stat carries a description and a unit, as gem5's ``ADD_STAT`` does, so a
results file or a report can say what a number is without a lookup table
elsewhere. Each component owns a :class:`StatsGroup` and declares its stats there
(one counter per outcome and per reject reason, as zswap's ``reject_*``); the
composition root attaches the components' groups under one root, and
:meth:`StatsGroup.snapshot` flattens the tree to dotted paths::

    host                             snapshot() of host:
    ├── faults (group)                 "faults.minor"       -> 1234.0
    │   ├── minor   Counter, count     "faults.major"       -> 7.0
    │   └── major   Counter, count     "free_pages"         -> 52000.0
    └── free_pages  Level, pages

Names are single path segments (letters, digits, ``_`` and ``-``); hierarchy
comes only from groups, so every level of a dotted path has a description too.
Registering the same name twice in one group is a bug and raises ValueError.

Cost model: these are plain Python objects, updated per batch, per tick or per
event, never per memory reference. Hot loops count in NumPy arrays inside their
kernels and add the totals here.

Invariants:

* a counter's value never decreases between resets;
* a level's clock never goes backward: ``set`` and ``time_average`` refuse a
  time earlier than the last change;
* ``minimum <= value <= maximum`` and ``minimum <= time_average <= maximum``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator
from typing import TypeVar

__all__ = ["Counter", "Level", "Stat", "StatsGroup"]

_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")


def _check_label(name: str, description: str, unit: str | None = None) -> None:
    if not isinstance(name, str) or not _SEGMENT.match(name):
        raise ValueError(
            f"stat name {name!r} must be one segment of letters, digits, '_' or '-' "
            "(use a child group for hierarchy)"
        )
    if not description:
        raise ValueError(f"stat {name!r} needs a description")
    if unit is not None and not unit:
        raise ValueError(f"stat {name!r} needs a unit (such as 'count', 'pages', 'ns')")


class Counter:
    """A tally of events: only grows, reset to zero by ``reset``.

    Args:
        name: one path segment, such as ``"minor"``.
        description: what is counted, one line.
        unit: what one unit of the value is, such as ``"count"``, ``"pages"``, ``"ns"``.
    """

    __slots__ = ("_value", "description", "name", "unit")

    def __init__(self, name: str, description: str, unit: str) -> None:
        _check_label(name, description, unit)
        self.name = name
        self.description = description
        self.unit = unit
        self._value = 0

    @property
    def value(self) -> int:
        """The count since creation or the last reset."""
        return self._value

    def add(self, n: int = 1) -> None:
        """Count ``n`` more events.

        Args:
            n: a non-negative integer (NumPy integers are accepted).

        Raises:
            ValueError: ``n`` is negative.
            TypeError: ``n`` is not an integer.
        """
        n = operator.index(n)
        if n < 0:
            raise ValueError(f"counter {self.name!r}: cannot add a negative count ({n})")
        self._value += n

    def reset(self) -> None:
        """Set the count back to zero."""
        self._value = 0

    def __repr__(self) -> str:
        return f"Counter({self.name!r}, value={self._value}, unit={self.unit!r})"


class Level:
    """A quantity held over simulated time, with its time-weighted average and extremes.

    The level holds ``initial`` from ``start_ns`` until the first ``set``. The
    averaging window runs from ``start_ns`` (or the last reset) to the time asked.

    Args:
        name: one path segment, such as ``"free_pages"``.
        description: what the quantity is, one line.
        unit: its unit, such as ``"pages"`` or ``"MiB"``.
        initial: the value held from ``start_ns``.
        start_ns: when the level starts to be observed, in nanoseconds.
    """

    __slots__ = (
        "_area",
        "_changed_ns",
        "_maximum",
        "_minimum",
        "_value",
        "_window_start_ns",
        "description",
        "name",
        "unit",
    )

    def __init__(
        self, name: str, description: str, unit: str, initial: float = 0.0, start_ns: int = 0
    ) -> None:
        _check_label(name, description, unit)
        self.name = name
        self.description = description
        self.unit = unit
        self._value = float(initial)
        self._restart(operator.index(start_ns))

    @property
    def value(self) -> float:
        """The current value."""
        return self._value

    @property
    def minimum(self) -> float:
        """The smallest value taken since the window started (even for zero time)."""
        return self._minimum

    @property
    def maximum(self) -> float:
        """The largest value taken since the window started (even for zero time)."""
        return self._maximum

    def set(self, value: float, now_ns: int) -> None:
        """Change the level at time ``now_ns``.

        Args:
            value: the new value, held from ``now_ns`` on.
            now_ns: the current simulated time, in nanoseconds.

        Raises:
            ValueError: ``now_ns`` is before the last change.
        """
        now_ns = self._check_time(now_ns)
        self._area += self._value * (now_ns - self._changed_ns)
        self._changed_ns = now_ns
        self._value = float(value)
        self._minimum = min(self._minimum, self._value)
        self._maximum = max(self._maximum, self._value)

    def time_average(self, now_ns: int) -> float:
        """Return the time-weighted average over the window ending at ``now_ns``.

        Args:
            now_ns: the end of the window, in nanoseconds.

        Returns:
            The average of the value weighted by how long each value was held;
            the current value if the window is empty.

        Raises:
            ValueError: ``now_ns`` is before the last change.
        """
        now_ns = self._check_time(now_ns)
        duration_ns = now_ns - self._window_start_ns
        if duration_ns == 0:
            return self._value
        area = self._area + self._value * (now_ns - self._changed_ns)
        return area / duration_ns

    def reset(self, now_ns: int) -> None:
        """Start a new averaging window at ``now_ns``, keeping the current value.

        Args:
            now_ns: the start of the new window, in nanoseconds.

        Raises:
            ValueError: ``now_ns`` is before the last change.
        """
        self._restart(self._check_time(now_ns))

    def _restart(self, start_ns: int) -> None:
        self._window_start_ns = start_ns
        self._changed_ns = start_ns
        self._area = 0.0
        self._minimum = self._value
        self._maximum = self._value

    def _check_time(self, now_ns: int) -> int:
        now_ns = operator.index(now_ns)
        if now_ns < self._changed_ns:
            raise ValueError(
                f"level {self.name!r}: time went backward ({now_ns} < {self._changed_ns} ns)"
            )
        return now_ns

    def __repr__(self) -> str:
        return f"Level({self.name!r}, value={self._value}, unit={self.unit!r})"


#: Either kind of stat.
Stat = Counter | Level

_Member = TypeVar("_Member", Counter, Level, "StatsGroup")


class StatsGroup:
    """A named, described group of counters, levels and child groups.

    Args:
        name: one path segment; the group's name in its parent's paths.
        description: what the group covers, one line.
    """

    def __init__(self, name: str, description: str) -> None:
        _check_label(name, description)
        self.name = name
        self.description = description
        # One namespace for stats and child groups, in registration order, so
        # paths are unique and snapshots come out in a deterministic order.
        self._members: dict[str, Stat | StatsGroup] = {}

    def counter(self, name: str, description: str, unit: str = "count") -> Counter:
        """Create and register a counter.

        Args:
            name: one path segment, unique in this group.
            description: what is counted, one line.
            unit: the unit of the count; ``"count"`` for plain event counts.

        Returns:
            The new counter.

        Raises:
            ValueError: the name is taken or malformed, or a label is empty.
        """
        return self._register(Counter(name, description, unit))

    def level(
        self, name: str, description: str, unit: str, initial: float = 0.0, start_ns: int = 0
    ) -> Level:
        """Create and register a level.

        Args:
            name: one path segment, unique in this group.
            description: what the quantity is, one line.
            unit: its unit, such as ``"pages"``.
            initial: the value held from ``start_ns``.
            start_ns: when observation starts, in nanoseconds.

        Returns:
            The new level.

        Raises:
            ValueError: the name is taken or malformed, or a label is empty.
        """
        return self._register(Level(name, description, unit, initial, start_ns))

    def group(self, name: str, description: str) -> StatsGroup:
        """Create and register a child group.

        Args:
            name: one path segment, unique in this group.
            description: what the child group covers, one line.

        Returns:
            The new child group.

        Raises:
            ValueError: the name is taken or malformed, or the description is empty.
        """
        return self._register(StatsGroup(name, description))

    def attach(self, child: StatsGroup) -> StatsGroup:
        """Register a group a component built for itself, as a child of this one.

        Args:
            child: the group; its ``name`` becomes its path segment here.

        Returns:
            ``child``, for chaining.

        Raises:
            ValueError: the name is taken in this group.
        """
        return self._register(child)

    def get(self, path: str) -> Stat | StatsGroup:
        """Look up a stat or group by dotted path relative to this group.

        Args:
            path: such as ``"faults.minor"``.

        Returns:
            The counter, level or group at that path.

        Raises:
            KeyError: nothing is registered at that path.
        """
        node: Stat | StatsGroup = self
        for segment in path.split("."):
            if not isinstance(node, StatsGroup) or segment not in node._members:
                raise KeyError(f"no stat {path!r} in group {self.name!r}")
            node = node._members[segment]
        return node

    def walk(self) -> Iterator[tuple[str, Stat]]:
        """Yield ``(dotted_path, stat)`` for every stat below this group.

        Paths are relative to this group (its own name is not a prefix) and come
        in registration order, depth first.
        """
        for name, member in self._members.items():
            if isinstance(member, StatsGroup):
                for path, stat in member.walk():
                    yield f"{name}.{path}", stat
            else:
                yield name, member

    def snapshot(self) -> dict[str, float]:
        """Return the current value of every stat, keyed by dotted path.

        Counters give their count and levels their current value; for a level's
        time average or extremes, :meth:`walk` the group.
        """
        return {path: float(stat.value) for path, stat in self.walk()}

    def reset(self, now_ns: int) -> None:
        """Reset every stat below this group: counters to zero, level windows to ``now_ns``.

        Args:
            now_ns: the current simulated time, in nanoseconds (a level's new
                averaging window starts there).
        """
        for _path, stat in self.walk():
            if isinstance(stat, Level):
                stat.reset(now_ns)
            else:
                stat.reset()

    def _register(self, member: _Member) -> _Member:
        if member.name in self._members:
            raise ValueError(f"group {self.name!r} already has a member named {member.name!r}")
        self._members[member.name] = member
        return member

    def __repr__(self) -> str:
        return f"StatsGroup({self.name!r}, members={list(self._members)})"
