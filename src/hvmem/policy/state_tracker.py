"""A host's memory state from its free memory: classification and hysteresis.

Hysteresis
----------
Transitions use a lower and an upper boundary so that the host does not
oscillate ([OSDI02 §6.3][YB-LP6][YB-STATES6]); the widths are unconfirmed
(docs/references.md, open question 3). This module chooses:

* downward moves are immediate: a state is entered as soon as free memory is
  *below* its threshold, and a fall may cross several states in one update
  (under fast memory growth the states are crossed within seconds [YB-LP6]);
* upward moves need free memory to *exceed* an exit level, one state at a time
  (repeated within an update while free memory allows). The exit level of a
  state S is ``(1 + exit_margin_frac) x`` a threshold chosen by the exit rule:

  - ``ExitRule.OWN``: S's own threshold. Actions stop "slightly after passing
    that threshold" ([YB-STATES6][YB-LP6]); default for esxi5 and esxi6.
  - ``ExitRule.NEXT``: the threshold of the state above S. ESX 1.5 returns "to
    the next higher state only after significantly exceeding the higher
    threshold" ([OSDI02 §6.3]); [VOICE] reports a 64-100 % of minFree band
    between SOFT and HIGH in 5.x. Default for esx4.

  ``exit_margin_frac`` defaults to ``DEFAULT_EXIT_MARGIN_FRAC`` = 0.05, a
  project choice ("slightly" [YB-STATES6], "significantly" [OSDI02]: no number
  is published).

:func:`classify` is the same mapping without hysteresis (the state whose band
free memory is in, HIGH above the top entry threshold); it is a non-increasing
function of free memory in the order ``HIGH < CLEAR < SOFT < HARD < LOW``.
:class:`StateTracker` adds the hysteresis; its state is never less severe than
:func:`classify`'s.

Invariant: ``StateTracker.update`` returns a fixed point (updating again with the
same free memory changes nothing).

The thresholds are :mod:`hvmem.policy.minfree`'s; the states and what each allows
are :mod:`hvmem.policy.states`'.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
import numbers

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.minfree import Thresholds, check_frac
from hvmem.policy.states import ExitRule, MemState, actions, get_profile

__all__ = [
    "DEFAULT_EXIT_MARGIN_FRAC",
    "StateTracker",
    "classify",
    "large_page_breaking",
]


#: Upward exit margin: a state is left upward once free memory exceeds its exit
#: threshold by this fraction. Unconfirmed (docs/references.md, open question 3); project choice.
DEFAULT_EXIT_MARGIN_FRAC = 0.05


def _check_free(free_mib: float) -> float:
    if isinstance(free_mib, bool) or not isinstance(free_mib, numbers.Real):
        raise InvariantViolation(f"free memory sample must be a number, found {free_mib!r}")
    if math.isnan(free_mib):
        raise InvariantViolation("free memory sample is NaN")
    return free_mib


def classify(free_mib: float, thresholds: Thresholds) -> MemState:
    """The state of a host with ``free_mib`` free, without hysteresis.

    The least free state whose threshold ``free_mib`` is below; HIGH when it is at
    or above every entry threshold (HIGH's own threshold does not matter here).
    Non-increasing in ``free_mib`` in the :class:`MemState` order.
    """
    free = _check_free(free_mib)
    for state in reversed(thresholds.states[1:]):  # LOW first
        if free < thresholds.level_mib(state):
            return state
    return MemState.HIGH


class StateTracker:
    """A host's memory state with hysteresis, fed one free-memory sample at a time.

    Downward moves are immediate (possibly across several states); a state S is
    left upward, one state at a time, once free memory exceeds
    ``exit_level_mib(S)`` = ``(1 + exit_margin_frac)`` x (S's threshold under
    ``ExitRule.OWN``, the next higher state's under ``ExitRule.NEXT``). See the
    module docs for the sources of each choice.

    Args:
        thresholds: the host's thresholds.
        exit_margin_frac: margin above the exit threshold, >= 0
            (default :data:`DEFAULT_EXIT_MARGIN_FRAC`, unconfirmed).
        exit_rule: ``"own"`` or ``"next"``; None takes the profile's default
            (esx4: next [OSDI02 §6.3]; esxi5, esxi6: own [YB-LP6][YB-STATES6]).
        initial: the state before the first sample (default HIGH).

    Attributes:
        transitions: number of state changes so far (an event count).

    Raises:
        ConfigError: a negative margin, an unknown rule, or an initial state the
            profile lacks.
    """

    def __init__(
        self,
        thresholds: Thresholds,
        *,
        exit_margin_frac: float = DEFAULT_EXIT_MARGIN_FRAC,
        exit_rule: ExitRule | str | None = None,
        initial: MemState = MemState.HIGH,
    ) -> None:
        self.thresholds = thresholds
        self.exit_margin_frac = float(
            check_frac(exit_margin_frac, "exit_margin_frac", 0.0, None)
        )
        if exit_rule is None:
            exit_rule = get_profile(thresholds.profile).exit_rule
        try:
            self.exit_rule = ExitRule(exit_rule)
        except ValueError:
            raise ConfigError(
                f"exit_rule: expected one of {', '.join(rule.value for rule in ExitRule)}, "
                f"found {exit_rule!r}"
            ) from None
        thresholds.level_mib(initial)  # raises for a state the profile lacks
        self._state = MemState(initial)
        self.transitions = 0

    @property
    def state(self) -> MemState:
        """The current state."""
        return self._state

    def exit_level_mib(self, state: MemState) -> float:
        """Free memory must exceed this to leave ``state`` upward (inf for HIGH)."""
        thr = self.thresholds
        if state == MemState.HIGH:
            return math.inf
        base = state if self.exit_rule is ExitRule.OWN else thr.higher(state)
        return thr.level_mib(base) * (1.0 + self.exit_margin_frac)

    def update(self, free_mib: float) -> MemState:
        """Feed one free-memory sample (MiB); return the new state."""
        free = _check_free(free_mib)
        thr = self.thresholds
        state = before = self._state
        while state != MemState.LOW and free < thr.level_mib(thr.lower(state)):
            state = thr.lower(state)
        if state == before:
            while free > self.exit_level_mib(state):
                state = thr.higher(state)
        if state != before:
            self.transitions += 1
        self._state = state
        return state


def large_page_breaking(state: MemState, free_mib: float, thresholds: Thresholds) -> str:
    """How the host breaks large pages in ``state`` with ``free_mib`` free.

    "active" where :func:`~hvmem.policy.states.actions` says ``break_large_pages``
    (ESXi 6 CLEAR and below: split them and call TPS); "lazy" in ESXi 6 HIGH once
    free memory is below the HIGH threshold (split the large pages the next TPS run
    visits); "off" otherwise, and always before ESXi 6, where only the swap path
    splits them [YB-STATES6][YB-LP6][KB1021095].
    """
    prof = get_profile(thresholds.profile)
    if actions(state, prof).break_large_pages:
        return "active"
    if prof.breaks_large_pages and free_mib < thresholds.high_mib:
        return "lazy"
    return "off"
