"""Host free-memory states: minFree, thresholds per ESX version, hysteresis, actions.

What is modelled
----------------
An ESX host watches one number, its free machine memory, and sorts it into a
*memory state* that decides which reclamation mechanisms run ([OSDI02 §6.3],
[YB-STATES6]). From most to least free memory:

* ``HIGH``  -- enough free memory; transparent page sharing (TPS) as usual, no
  reclamation ([OSDI02 §6.3]). In ESXi 6 large pages start to be split lazily
  (at the next TPS run) once free memory is below the HIGH threshold
  ([YB-STATES6]).
* ``CLEAR`` -- ESXi 6.0+ only: split large pages and call TPS actively so that
  sharing reclaims memory before ballooning has to ([YB-STATES6][YB-LP6]).
* ``SOFT``  -- balloon; swap only VMs that cannot be ballooned ([OSDI02 §6.3],
  [VS-SWAPWHEN]).
* ``HARD``  -- compress and swap; ballooning stops ([YB-STATES6]; ESX <= 4.0 has
  no compression, which arrived in 4.1 [VI-41][FD-MINFREE]).
* ``LOW``   -- as HARD, and VMs above their target may not allocate until the
  host is back in HARD ([OSDI02 §6.3][YB-STATES6]).

A state is *entered* when free memory drops below its threshold ([YB-LP6]:
"Soft ... is reached when there is less than 64% of minFree available"). HIGH is
the top state: its threshold is not where it is entered but the level the host
steers free memory back above ("target allocations ... drive the aggregate
amount of free space above the high threshold" [OSDI02 §6.3]) and, in ESXi 6,
where lazy large-page splitting begins. Thresholds against free memory::

    free    esx4                 esxi5                  esxi6
    memory  (% of host memory)   (% of minFree)         (% of minFree)
      ^
      |                                                  -- 400 % high threshold
      |     HIGH                 HIGH                    HIGH   (lazy LP split below)
      |   --  6 % high threshold -- 100 % high threshold -- 100 % CLEAR below
      |   --  4 % SOFT below     --  64 % SOFT below     --  64 % SOFT below
      |   --  2 % HARD below     --  32 % HARD below     --  32 % HARD below
      |   --  1 % LOW below      --  16 % LOW below      --  16 % LOW below
      0

Profiles (one per family of versions)
-------------------------------------
* ``esx4``  (ESX 1.5 to 4.0): thresholds are fixed fractions of host memory,
  high/soft/hard/low = 6/4/2/1 % ([OSDI02 §6.3][YB-MINFREE]); minFree is the high
  threshold, 6 % of memory (``Mem.MemMinFreePct`` became settable only in 4.1
  [FD-MINFREE][YB-MINFREE]). No memory compression.
* ``esxi5`` (vSphere 5.x): minFree comes from the sliding scale ([FD-MINFREE],
  [VMAESTRO-MINFREE]): 6 % of the first 4 GiB of host memory, 4 % of the next
  8 GiB, 2 % of the next 16 GiB and 1 % of the rest, so the first 28 GiB give
  245.76 + 327.68 + 327.68 = 901.12 MiB (blogs quote "899 MB" [RUNSYS]
  [JGRIFF]; that figure does not follow from the published scale and is not
  used). High/soft/hard/low = 100/64/32/16 % of minFree ([YB-LP6][YB-MINFREE]).
* ``esxi6`` (vSphere 6.0 and later): as esxi5, plus CLEAR at 100 % of minFree,
  and the HIGH threshold moves to 400 % of minFree ([YB-STATES6]). **Sources
  disagree**: [CODEFUNDA] says 300 %; ``thresholds(..., high_frac=3.0)``
  reproduces it, the default is [YB-STATES6]'s 4.0.

The sliding scale applies to the memory the VMkernel manages, not the installed
RAM: a 128 GiB host whose VMkernel manages 130 607 MiB shows "minfree 1920" in
esxtop ([VMWAREBITS]). Pass the managed memory as ``total_mib`` where it is
known. ``Mem.MemMinFreePct`` (0 = sliding scale, else a fixed percentage of
memory, range 0-50 [LAMW]) is ``min_free_frac`` (0.0 to 0.5) for esxi5/esxi6.

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

Invariants: thresholds strictly decrease from HIGH to LOW and are positive;
``StateTracker.update`` returns a fixed point (updating again with the same free
memory changes nothing).

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from fractions import Fraction
from typing import Any

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.units import MIB

__all__ = [
    "DEFAULT_EXIT_MARGIN_FRAC",
    "DEFAULT_PROFILE",
    "ESXI6_HIGH_FRAC",
    "PROFILES",
    "SLIDING_SCALE_BANDS",
    "ExitRule",
    "MemState",
    "Profile",
    "StateActions",
    "StateTracker",
    "Thresholds",
    "actions",
    "classify",
    "get_profile",
    "large_page_breaking",
    "minfree_mib",
    "minfree_report",
    "thresholds",
]


class MemState(IntEnum):
    """Host free-memory state, ordered from most to least free memory.

    The integer value grows with memory pressure, so ``state >= MemState.SOFT``
    reads "SOFT or worse". (Legacy monitoring used 0-3 for high/soft/hard/low
    [EGMON]; these values differ because CLEAR sits between HIGH and SOFT.)
    """

    HIGH = 0
    CLEAR = 1
    SOFT = 2
    HARD = 3
    LOW = 4

    @property
    def label(self) -> str:
        """The name esxtop shows on its first memory line ("high", "clear", ...) [RUNSYS]."""
        return self.name.lower()


class ExitRule(StrEnum):
    """Which threshold a state's upward exit level is measured from (see module docs)."""

    OWN = "own"  # the state's own entry threshold [YB-STATES6][YB-LP6]
    NEXT = "next"  # the threshold of the state above it [OSDI02 §6.3][VOICE]


#: Sliding scale of vSphere 5.0+ [FD-MINFREE][VMAESTRO-MINFREE]: (band size in MiB,
#: fraction of the band kept free); the last band (None) takes the rest.
SLIDING_SCALE_BANDS: tuple[tuple[int | None, float], ...] = (
    (4096, 0.06),
    (8192, 0.04),
    (16384, 0.02),
    (None, 0.01),
)

#: HIGH threshold of ESXi 6.0+ as a multiple of minFree: 400 % [YB-STATES6];
#: [CODEFUNDA] says 300 % (conflict: docs/references.md, open question 2).
ESXI6_HIGH_FRAC = 4.0

#: Upward exit margin: a state is left upward once free memory exceeds its exit
#: threshold by this fraction. Unconfirmed (docs/references.md, open question 3); project choice.
DEFAULT_EXIT_MARGIN_FRAC = 0.05

#: Profile used where a caller names none: vSphere 6.0 and later (through 9.0)
#: share the esxi6 states [YB-STATES6].
DEFAULT_PROFILE = "esxi6"

# Mem.MemMinFreePct accepts 0-50 (%) [LAMW].
_MAX_MIN_FREE_FRAC = 0.5


@dataclass(frozen=True)
class Profile:
    """How one family of ESX versions sets its free-memory thresholds.

    Attributes:
        name: profile key ("esx4", "esxi5", "esxi6").
        versions: the ESX versions it stands for.
        sliding_scale: minFree comes from :data:`SLIDING_SCALE_BANDS`; otherwise it is
            the HIGH threshold, a fixed fraction of host memory.
        level_fracs: per state, its threshold as a fraction of host memory (when not
            ``sliding_scale``) or of minFree (when ``sliding_scale``); HIGH first.
        compression: memory compression exists (ESX 4.1+ [VI-41][FD-MINFREE]).
        breaks_large_pages: CLEAR splits large pages and calls TPS actively (ESXi 6.0+
            [YB-STATES6]); worse states keep doing so (**derived**).
        exit_rule: default hysteresis exit rule (see the module docs).
        sources: the source keys of the numbers above.
    """

    name: str
    versions: str
    sliding_scale: bool
    level_fracs: tuple[tuple[MemState, float], ...]
    compression: bool
    breaks_large_pages: bool
    exit_rule: ExitRule
    sources: str

    @property
    def states(self) -> tuple[MemState, ...]:
        """The states this profile has, from most to least free memory."""
        return tuple(state for state, _ in self.level_fracs)


PROFILES: dict[str, Profile] = {
    "esx4": Profile(
        name="esx4",
        versions="ESX 1.5 to 4.0",
        sliding_scale=False,
        # 6/4/2/1 % of host ("system") memory [OSDI02 §6.3][YB-MINFREE].
        level_fracs=(
            (MemState.HIGH, 0.06),
            (MemState.SOFT, 0.04),
            (MemState.HARD, 0.02),
            (MemState.LOW, 0.01),
        ),
        compression=False,  # compression is 4.1+ [VI-41][FD-MINFREE]
        breaks_large_pages=False,
        exit_rule=ExitRule.NEXT,  # [OSDI02 §6.3] "significantly exceeding the higher threshold"
        sources="[OSDI02 §6.3][YB-MINFREE][ESX25-p352]",
    ),
    "esxi5": Profile(
        name="esxi5",
        versions="ESXi 5.x",
        sliding_scale=True,
        # 100/64/32/16 % of minFree [YB-LP6][YB-MINFREE][JGRIFF].
        level_fracs=(
            (MemState.HIGH, 1.0),
            (MemState.SOFT, 0.64),
            (MemState.HARD, 0.32),
            (MemState.LOW, 0.16),
        ),
        compression=True,
        breaks_large_pages=False,
        exit_rule=ExitRule.OWN,  # [YB-LP6] "lower and upper boundary"
        sources="[FD-MINFREE][VMAESTRO-MINFREE][YB-LP6][YB-MINFREE][JGRIFF]",
    ),
    "esxi6": Profile(
        name="esxi6",
        versions="ESXi 6.0 and later",
        sliding_scale=True,
        # 400/100/64/32/16 % of minFree [YB-STATES6]; 300 % HIGH per [CODEFUNDA].
        level_fracs=(
            (MemState.HIGH, ESXI6_HIGH_FRAC),
            (MemState.CLEAR, 1.0),
            (MemState.SOFT, 0.64),
            (MemState.HARD, 0.32),
            (MemState.LOW, 0.16),
        ),
        compression=True,
        breaks_large_pages=True,
        exit_rule=ExitRule.OWN,  # [YB-STATES6] "slightly before or after"
        sources="[FD-MINFREE][YB-STATES6][YB-LP6][RUNSYS]",
    ),
}


def get_profile(profile: str | Profile) -> Profile:
    """Look a profile up by name (a :class:`Profile` passes through).

    Raises:
        ConfigError: the name is not one of :data:`PROFILES`.
    """
    if isinstance(profile, Profile):
        return profile
    found = PROFILES.get(profile) if isinstance(profile, str) else None
    if found is None:
        raise ConfigError(
            f"unknown memory-state profile {profile!r}; choose one of {', '.join(PROFILES)}"
        )
    return found


# -- minFree and thresholds -------------------------------------------------------------


def _exact(value: numbers.Real) -> Fraction:
    """A number as an exact fraction of its shortest decimal form (0.64 -> 16/25).

    Thresholds are computed exactly and rounded once, so 64 % of 1925.12 MiB comes
    out as 1232.0768, not 1232.0768000000001.
    """
    if isinstance(value, numbers.Integral):
        return Fraction(int(value))
    return Fraction(repr(float(value)))


def _check_memory_mib(total_mib: float, what: str = "host memory") -> Fraction:
    if isinstance(total_mib, bool) or not isinstance(total_mib, numbers.Real):
        raise ConfigError(f"{what}: expected a number of MiB, found {total_mib!r}")
    if not math.isfinite(total_mib) or total_mib <= 0:
        raise ConfigError(f"{what}: must be a positive size, found {total_mib} MiB")
    return _exact(total_mib)


def _check_frac(value: float, what: str, low: float, high: float | None) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what}: expected a fraction, found {value!r}")
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{what}: must be {bound}, found {value}")
    return _exact(value)


def _minfree_exact(total: Fraction, profile: Profile, min_free_frac: float) -> Fraction:
    if not profile.sliding_scale:
        if min_free_frac:
            raise ConfigError(
                f"min_free_frac: profile {profile.name} keeps a fixed 6 % minFree "
                "(Mem.MemMinFreePct is settable from ESX 4.1); use esxi5 or esxi6"
            )
        return total * _exact(dict(profile.level_fracs)[MemState.HIGH])
    frac = _check_frac(min_free_frac, "min_free_frac", 0.0, _MAX_MIN_FREE_FRAC)
    if frac:  # Mem.MemMinFreePct != 0: a fixed percentage instead of the scale [LAMW]
        return total * frac
    left, kept = total, Fraction(0)
    for band_mib, band_frac in SLIDING_SCALE_BANDS:
        take = left if band_mib is None else min(left, Fraction(band_mib))
        kept += take * _exact(band_frac)
        left -= take
    return kept


def minfree_mib(total_mib: float, profile: str | Profile, *, min_free_frac: float = 0.0) -> float:
    """The minFree of a host: the free memory it tries to keep, in MiB.

    esxi5/esxi6: the sliding scale 6 % of the first 4 GiB, 4 % of the next 8 GiB,
    2 % of the next 16 GiB, 1 % of the rest [FD-MINFREE][VMAESTRO-MINFREE]. esx4:
    6 % of memory, its high threshold [OSDI02 §6.3][YB-MINFREE].

    Args:
        total_mib: host memory in MiB (VMkernel-managed memory where known [VMWAREBITS]).
        profile: profile name or :class:`Profile`.
        min_free_frac: ``Mem.MemMinFreePct`` / 100 (0.0 to 0.5 [LAMW]); 0 selects the
            sliding scale. esxi5/esxi6 only.

    Raises:
        ConfigError: unknown profile, non-positive memory, or a bad ``min_free_frac``.
    """
    prof = get_profile(profile)
    return float(_minfree_exact(_check_memory_mib(total_mib), prof, min_free_frac))


@dataclass(frozen=True)
class Thresholds:
    """Free-memory thresholds of one host, in MiB.

    Each ``*_mib`` is the level below which that state is entered; ``high_mib`` is
    the level the host steers free memory above (and, in esxi6, below which large
    pages are split lazily) [OSDI02 §6.3][YB-STATES6]. ``clear_mib`` is None for
    profiles without a CLEAR state.

    Raises:
        ConfigError: the levels are not positive and strictly decreasing from HIGH
            to LOW.
    """

    profile: str
    total_mib: float
    minfree_mib: float
    high_mib: float
    clear_mib: float | None
    soft_mib: float
    hard_mib: float
    low_mib: float

    def __post_init__(self) -> None:
        levels = [(state.label, self.level_mib(state)) for state in self.states]
        for (upper, upper_mib), (lower, lower_mib) in zip(levels, levels[1:], strict=False):
            if not upper_mib > lower_mib:
                raise ConfigError(
                    f"{self.profile} thresholds: {upper} ({upper_mib:g} MiB) must be above "
                    f"{lower} ({lower_mib:g} MiB)"
                )
        if not all(math.isfinite(mib) for _, mib in levels) or self.low_mib <= 0:
            raise ConfigError(f"{self.profile} thresholds: levels must be positive and finite")

    @property
    def states(self) -> tuple[MemState, ...]:
        """The states these thresholds define, from most to least free memory."""
        return tuple(state for state in MemState if self._level_or_none(state) is not None)

    def _level_or_none(self, state: MemState) -> float | None:
        return {
            MemState.HIGH: self.high_mib,
            MemState.CLEAR: self.clear_mib,
            MemState.SOFT: self.soft_mib,
            MemState.HARD: self.hard_mib,
            MemState.LOW: self.low_mib,
        }[MemState(state)]

    def level_mib(self, state: MemState) -> float:
        """The threshold of ``state`` in MiB.

        Raises:
            ConfigError: the profile has no such state (CLEAR before ESXi 6).
        """
        level = self._level_or_none(state)
        if level is None:
            raise ConfigError(f"profile {self.profile} has no {MemState(state).label} state")
        return level

    def higher(self, state: MemState) -> MemState:
        """The state just above ``state`` (more free memory); HIGH stays HIGH."""
        states = self.states
        return states[max(states.index(self._known(state)) - 1, 0)]

    def lower(self, state: MemState) -> MemState:
        """The state just below ``state`` (less free memory); LOW stays LOW."""
        states = self.states
        return states[min(states.index(self._known(state)) + 1, len(states) - 1)]

    def _known(self, state: MemState) -> MemState:
        self.level_mib(state)  # raises for a state the profile lacks
        return MemState(state)

    def thresholds_mib(self) -> dict[str, float]:
        """``{"high": ..., "clear": ... (if any), "soft": ..., "hard": ..., "low": ...}``."""
        return {state.label: self.level_mib(state) for state in self.states}


def thresholds(
    total_mib: float,
    profile: str | Profile,
    *,
    min_free_frac: float = 0.0,
    high_frac: float | None = None,
) -> Thresholds:
    """The thresholds of a host of ``total_mib`` under ``profile``.

    Args:
        total_mib: host memory in MiB (VMkernel-managed memory where known [VMWAREBITS]).
        profile: profile name or :class:`Profile`.
        min_free_frac: ``Mem.MemMinFreePct`` / 100; 0 = sliding scale (esxi5/esxi6).
        high_frac: HIGH threshold as a multiple of minFree, replacing the profile's
            (esxi6: 4.0 [YB-STATES6], 3.0 per [CODEFUNDA]; esxi5: 1.0 [YB-LP6]).
            Not for esx4, whose thresholds are fractions of host memory.

    Raises:
        ConfigError: unknown profile, non-positive memory, bad fractions, or
            thresholds that would not decrease from HIGH to LOW.
    """
    prof = get_profile(profile)
    total = _check_memory_mib(total_mib)
    minfree = _minfree_exact(total, prof, min_free_frac)
    base = minfree if prof.sliding_scale else total
    fracs = {state: _exact(frac) for state, frac in prof.level_fracs}
    if high_frac is not None:
        if not prof.sliding_scale:
            raise ConfigError(
                f"high_frac: profile {prof.name} sets thresholds as fractions of host "
                "memory, not of minFree; use esxi5 or esxi6"
            )
        fracs[MemState.HIGH] = _check_frac(high_frac, "high_frac", 0.0, None)
    levels = {state: float(base * frac) for state, frac in fracs.items()}
    return Thresholds(
        profile=prof.name,
        total_mib=float(total),
        minfree_mib=float(minfree),
        high_mib=levels[MemState.HIGH],
        clear_mib=levels.get(MemState.CLEAR),
        soft_mib=levels[MemState.SOFT],
        hard_mib=levels[MemState.HARD],
        low_mib=levels[MemState.LOW],
    )


def minfree_report(
    total_bytes: int | float,
    profile: str | Profile,
    *,
    min_free_frac: float = 0.0,
    high_frac: float | None = None,
) -> dict[str, Any]:
    """The minFree and thresholds of a host, JSON-ready (backs ``hvmem minfree --json``).

    Returns:
        ``{"memory_mib", "profile", "minfree_mib", "thresholds_mib": {"high",
        "clear" (esxi6 only), "soft", "hard", "low"}}``, sizes in MiB.

    Raises:
        ConfigError: unknown profile or non-positive memory (see :func:`thresholds`).
    """
    if isinstance(total_bytes, bool) or not isinstance(total_bytes, numbers.Real):
        raise ConfigError(f"host memory: expected a number of bytes, found {total_bytes!r}")
    total_mib = total_bytes / MIB
    thr = thresholds(total_mib, profile, min_free_frac=min_free_frac, high_frac=high_frac)
    return {
        "memory_mib": thr.total_mib,
        "profile": thr.profile,
        "minfree_mib": thr.minfree_mib,
        "thresholds_mib": thr.thresholds_mib(),
    }


# -- classification ---------------------------------------------------------------------


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
            _check_frac(exit_margin_frac, "exit_margin_frac", 0.0, None)
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


# -- actions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StateActions:
    """What a host does in one memory state (all flags are permissions for the planner).

    Attributes:
        share: transparent page sharing runs. Always: "TPS always" [YB-MINFREE]
            [DISABLE-BALLOON]; [YB-STATES6] omits TPS from LOW's list, but a page is
            always offered to sharing before it is swapped [OSDI02 §4.3][PERFCTR].
        break_large_pages: split large pages and call TPS actively (ESXi 6 CLEAR
            [YB-STATES6]; kept on in SOFT, HARD and LOW, **derived**: no source says it
            stops). Elsewhere large pages are split only when the swap path picks one
            [KB1021095]; in esxi6 HIGH, lazily below ``high_mib`` [YB-STATES6].
        balloon: inflate balloons to reclaim (SOFT only: [OSDI02 §6.3]; "when you
            enter the Hard state the balloon driver stops" [YB-STATES6]). False does
            not mean deflate: existing balloons may be held [OSDI02 Fig. 8].
        compress: compress swap candidates (HARD and LOW, ESX 4.1+ [YB-STATES6]
            [VI-41]).
        swap: swap forcibly (HARD and LOW [OSDI02 §6.3][YB-STATES6]).
        swap_fallback: swap VMs whose balloon cannot deliver (driver missing or at
            its maximum) [OSDI02 §6.3][VS-SWAPWHEN]; SOFT, and implied by ``swap``.
        block_allocations: VMs above their target may not allocate until the host
            is back in HARD (LOW only [OSDI02 §6.3][YB-STATES6]).
    """

    share: bool
    break_large_pages: bool
    balloon: bool
    compress: bool
    swap: bool
    swap_fallback: bool
    block_allocations: bool


def actions(state: MemState, profile: str | Profile = DEFAULT_PROFILE) -> StateActions:
    """The actions of ``state`` under ``profile`` (see :class:`StateActions` for sources).

    ========  =====  ==========  =======  ========  ====  ========  =====
    state     share  break LPs   balloon  compress  swap  fallback  block
    ========  =====  ==========  =======  ========  ====  ========  =====
    HIGH      yes    no          no       no        no    no        no
    CLEAR     yes    yes         no       no        no    no        no
    SOFT      yes    yes*        yes      no        no    yes       no
    HARD      yes    yes*        no       yes       yes   yes       no
    LOW       yes    yes*        no       yes       yes   yes       yes
    ========  =====  ==========  =======  ========  ====  ========  =====

    LPs: large pages; starred entries are esxi6 only. Compression: never in esx4
    (it arrived in ESX 4.1).

    Raises:
        ConfigError: unknown profile, or a state the profile lacks (CLEAR before ESXi 6).
    """
    prof = get_profile(profile)
    state = MemState(state)
    if state not in prof.states:
        raise ConfigError(f"profile {prof.name} has no {state.label} state")
    reclaiming_hard = state >= MemState.HARD
    return StateActions(
        share=True,
        break_large_pages=prof.breaks_large_pages and state >= MemState.CLEAR,
        balloon=state == MemState.SOFT,
        compress=prof.compression and reclaiming_hard,
        swap=reclaiming_hard,
        swap_fallback=state >= MemState.SOFT,
        block_allocations=state == MemState.LOW,
    )


def large_page_breaking(state: MemState, free_mib: float, thresholds: Thresholds) -> str:
    """How the host breaks large pages in ``state`` with ``free_mib`` free.

    "active" where :func:`actions` says ``break_large_pages`` (ESXi 6 CLEAR and
    below: split them and call TPS); "lazy" in ESXi 6 HIGH once free memory is
    below the HIGH threshold (split the large pages the next TPS run visits);
    "off" otherwise, and always before ESXi 6, where only the swap path splits
    them [YB-STATES6][YB-LP6][KB1021095].
    """
    prof = get_profile(thresholds.profile)
    if actions(state, prof).break_large_pages:
        return "active"
    if prof.breaks_large_pages and free_mib < thresholds.high_mib:
        return "lazy"
    return "off"
