"""minFree and the free-memory thresholds of the host memory states, per ESX profile.

What is modelled
----------------
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

The profiles (:data:`~hvmem.policy.states.PROFILES`) say which of these each
family of versions uses and how it sets minFree.

The sliding scale applies to the memory the VMkernel manages, not the installed
RAM: a 128 GiB host whose VMkernel manages 130 607 MiB shows "minfree 1920" in
esxtop ([VMWAREBITS]). Pass the managed memory as ``total_mib`` where it is
known. ``Mem.MemMinFreePct`` (0 = sliding scale, else a fixed percentage of
memory, range 0-50 [LAMW]) is ``min_free_frac`` (0.0 to 0.5) for esxi5/esxi6.

Invariants: thresholds strictly decrease from HIGH to LOW and are positive.

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from hvmem.errors import ConfigError
from hvmem.policy.states import MemState, Profile, get_profile
from hvmem.units import MIB

__all__ = [
    "SLIDING_SCALE_BANDS",
    "Thresholds",
    "check_frac",
    "minfree_mib",
    "minfree_report",
    "thresholds",
]


#: Sliding scale of vSphere 5.0+ [FD-MINFREE][VMAESTRO-MINFREE]: (band size in MiB,
#: fraction of the band kept free); the last band (None) takes the rest.
SLIDING_SCALE_BANDS: tuple[tuple[int | None, float], ...] = (
    (4096, 0.06),
    (8192, 0.04),
    (16384, 0.02),
    (None, 0.01),
)

# Mem.MemMinFreePct accepts 0-50 (%) [LAMW].
_MAX_MIN_FREE_FRAC = 0.5


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


def check_frac(value: float, what: str, low: float, high: float | None) -> Fraction:
    """``value`` as an exact fraction, or a ConfigError naming ``what`` if outside [low, high]."""
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
    frac = check_frac(min_free_frac, "min_free_frac", 0.0, _MAX_MIN_FREE_FRAC)
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
        fracs[MemState.HIGH] = check_frac(high_frac, "high_frac", 0.0, None)
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
