"""Host memory states: the ESX version profiles and the actions each state allows.

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

How free memory maps onto the states is in :mod:`hvmem.policy.minfree` (minFree
and each state's threshold) and :mod:`hvmem.policy.state_tracker` (the state of a
host, with hysteresis).

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

Sources: the keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum

from hvmem.errors import ConfigError

__all__ = [
    "DEFAULT_PROFILE",
    "ESXI6_HIGH_FRAC",
    "PROFILES",
    "ExitRule",
    "MemState",
    "Profile",
    "StateActions",
    "actions",
    "get_profile",
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
    """Which threshold a state's upward exit level is measured from.

    See :mod:`hvmem.policy.state_tracker` for the hysteresis it sets.
    """

    OWN = "own"  # the state's own entry threshold [YB-STATES6][YB-LP6]
    NEXT = "next"  # the threshold of the state above it [OSDI02 §6.3][VOICE]


#: HIGH threshold of ESXi 6.0+ as a multiple of minFree: 400 % [YB-STATES6];
#: [CODEFUNDA] says 300 % (conflict: docs/references.md, open question 2).
ESXI6_HIGH_FRAC = 4.0

#: Profile used where a caller names none: vSphere 6.0 and later (through 9.0)
#: share the esxi6 states [YB-STATES6].
DEFAULT_PROFILE = "esxi6"


@dataclass(frozen=True)
class Profile:
    """How one family of ESX versions sets its free-memory thresholds.

    Attributes:
        name: profile key ("esx4", "esxi5", "esxi6").
        versions: the ESX versions it stands for.
        sliding_scale: minFree comes from the sliding scale
            (:data:`~hvmem.policy.minfree.SLIDING_SCALE_BANDS`); otherwise it is the
            HIGH threshold, a fixed fraction of host memory.
        level_fracs: per state, its threshold as a fraction of host memory (when not
            ``sliding_scale``) or of minFree (when ``sliding_scale``); HIGH first.
        compression: memory compression exists (ESX 4.1+ [VI-41][FD-MINFREE]).
        breaks_large_pages: CLEAR splits large pages and calls TPS actively (ESXi 6.0+
            [YB-STATES6]); worse states keep doing so (**derived**).
        exit_rule: default hysteresis exit rule (see :mod:`hvmem.policy.state_tracker`).
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
