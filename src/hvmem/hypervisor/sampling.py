"""Active-memory estimation by statistical sampling (Waldspurger, OSDI 2002 §5.3).

What is modelled
----------------
The hypervisor cannot see a guest's working set, so it samples it. At the
start of each period it picks ``n`` guest-physical pages uniformly at random
and makes their next access trap (ESX invalidates their cached mappings); the
first touch of a sampled page in the period counts once. At the end of the
period the touched fraction ``f = t / n`` estimates the fraction of memory the
guest actively uses::

    period k (length P):  sample n pages --- touches counted --- f_k = t / n
    slow   <- slow + a_slow * (f_k - slow)          a = 1 - exp(-P / tau)
    fast   <- fast + a_fast * (f_k - fast)
    current = fast + a_fast * (t_so_far / n - fast) the running period, incremental
    estimate = max(slow, fast, current), floored at min_active_frac

Taking the maximum makes the estimate rise quickly when a guest gets busy and
fall slowly when it goes idle, which is what the idle memory tax needs.

The averages are exponential with *time constants*, not per-period gains: the
gain of a period of length ``P`` is ``1 - exp(-P / tau)``, so a longer period
takes a larger step and the estimate follows a workload in the same simulated
time whatever the period. The gains are not published; A_FAST = 0.5 and
A_SLOW = 0.2 a period are fitted to the paper's Fig. 6, whose period is 30 s
(docs/references.md, derived values), which gives the time constants
``tau = -30 s / ln(1 - a)``: 43.3 s for the fast average, 134.4 s for the slow
one (**derived**). After a workload stops, the fast average has lost 63 % of
its excess 43 s later and the slow one 134 s later, at either period.

Per profile (:data:`PROFILE_SAMPLING`; ``[host.sampling]`` overrides each):

======== ======== ============ ==============================================
profile  period   activity min source
======== ======== ============ ==============================================
esx4     30 s     0            ESX 1.5 and 2.5 (``MemSamplePeriod``)
                               [OSDI02 §5.3][ESX25-p343][ESX25-p399]
esxi5    60 s     0            vSphere ``Mem.SamplePeriod`` [VS4-ATTR][VS-ADV70]
esxi6    60 s     1 %          as esxi5; ``Mem.SampleActivePctMin`` = 1 from
                               6.5 [LAMW]
======== ======== ============ ==============================================

ESX 4.0, the last version of the esx4 profile's states, already samples every
60 s [VS4-ATTR]; the profile keeps the period of the ESX the paper describes
(set ``[host.sampling] period = "60s"`` for 4.0). Every profile samples 100
pages a period [OSDI02 §5.3] (vSphere: the usual claim, not in a VMware
document read here, [VCROOKY]).

The esxtop counters (``sim_rows.py``) [TECHJOCKEY][TECHNICLOUD]: ``%ACTVS`` the
slow average, ``%ACTVF`` the fast one, ``%ACTVN`` the current (the fast average
with the running period folded in: the value it takes next, if the period
ended now), ``%ACTV`` the estimate; ``TCHD`` is what the sample says the guest
touched *now*: the running period's count, or the last whole period's while
the running one has counted fewer (a fresh period starts at zero). When a
workload stops, TCHD falls to the floor within one period and ACTV takes the
slow average's minutes. How the "current" average weights a partly elapsed
period is not published; this model uses the running count as if the period
had ended (it can only underestimate, and the maximum hides that).

Periods are timed on the simulated clock (``core/period.py``): the first
begins at the first :meth:`ActiveMemorySampler.advance` (the VM's first tick),
each next one a period after the last began.

Traps are observed wherever the hypervisor sees a guest touch a page: the
guest-physical memory bus (page fidelity) and hypervisor faults (mmu fidelity).

Sampling by traps
-----------------
Under mmu fidelity the sampler learns of touches as ESX does [OSDI02 §5.3]:
when a period starts, the sampled pages' mappings are taken from the hardware
(:func:`arm_sampling`: nested leaves cleared and INVEPT, or shadow leaves
zapped), so the next access to each exits to the hypervisor, whether it comes
through the MMU or from the guest's own touches of the page over the memory
bus. The exit is counted (``sampling_traps``), charged as one VM exit (``vmexit_ns``:
the frame is in place, only its mapping comes back),
reported to the sampler, and the mapping comes back before the access is
retried (:func:`sampling_trap`). Under page fidelity nothing is armed and the
sampler watches the memory bus. (A sampled page inside a host large page keeps
its 2 MiB leaf, so it traps only from the bus, or once the large page is broken.)

Invariants: 0 <= slow, fast, current <= 1; a sampled page counts at most once
per period; a VM's ``n_armed`` is the number of its pages whose traps are set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from hvmem.core.period import Period
from hvmem.core.sets import sorted_unique
from hvmem.errors import ConfigError
from hvmem.hypervisor.vm_state import VmState
from hvmem.params import check, fail, frac, time, whole
from hvmem.units import NS_PER_S

SAMPLE_PAGES = 100  # pages sampled per period [OSDI02 §5.3]
ESX_SAMPLE_PERIOD_NS = 30 * NS_PER_S  # ESX 1.5, 2.5 MemSamplePeriod [OSDI02 §5.3][ESX25-p343]
SAMPLE_PERIOD_NS = 60 * NS_PER_S  # Mem.SamplePeriod, ESX 4.0 on [VS4-ATTR][VS-ADV70]
FIT_PERIOD_NS = 30 * NS_PER_S  # the period of [OSDI02 Fig. 6], which the gains are fitted to
FAST_GAIN = 0.5  # a period of FIT_PERIOD_NS, fitted to [OSDI02 Fig. 6] (**derived**)
SLOW_GAIN = 0.2  # a period of FIT_PERIOD_NS, fitted to [OSDI02 Fig. 6] (**derived**)
MIN_ACTIVE_FRAC = 0.01  # Mem.SampleActivePctMin = 1 in vSphere 6.5+ [LAMW]


def time_constant_ns(gain: float, period_ns: int = FIT_PERIOD_NS) -> int:
    """The time constant of an average that moves ``gain`` of the way each ``period_ns``."""
    return round(-period_ns / math.log(1.0 - gain))


def period_gain(period_ns: int, tau_ns: int) -> float:
    """The share of the way an average of time constant ``tau_ns`` moves in ``period_ns``."""
    return 1.0 - math.exp(-period_ns / tau_ns)


# The fitted gains as time constants, to 0.1 s (**derived**, module essay): gains of
# 0.4998 and 0.2000 a 30 s period.
FAST_TIME_CONSTANT_NS = round(time_constant_ns(FAST_GAIN), -8)  # 43.3 s
SLOW_TIME_CONSTANT_NS = round(time_constant_ns(SLOW_GAIN), -8)  # 134.4 s

#: Per profile: (sampling period, activity floor); see the module essay.
PROFILE_SAMPLING: dict[str, tuple[int, float]] = {
    "esx4": (ESX_SAMPLE_PERIOD_NS, 0.0),  # [OSDI02 §5.3][ESX25-p343][ESX25-p399]
    "esxi5": (SAMPLE_PERIOD_NS, 0.0),  # [VS4-ATTR][VS-ADV70]; no floor before 6.5 [LAMW]
    "esxi6": (SAMPLE_PERIOD_NS, MIN_ACTIVE_FRAC),  # [VS-ADV70][LAMW]
}


@dataclass(frozen=True, slots=True, kw_only=True)
class SamplerConfig:
    """Active-memory sampling (``[host.sampling]``): sample, period and the averages.

    ``period_ns`` and ``min_active_frac`` left None take the host profile's
    (:meth:`for_profile`); a sampler needs them set.
    """

    sample_pages: int = whole(SAMPLE_PAGES, "guest pages sampled each period", lo=1,
                              hi=1 << 20, source="100 [OSDI02 §5.3]; vSphere [VCROOKY]")
    period_ns: int | None = time(None, "Mem.SamplePeriod: time between samples", lo=0,
                                 lo_open=True, hi=3600 * NS_PER_S, optional=True,
                                 none="as the profile: 30 s for esx4, 60 s for esxi5 and esxi6",
                                 source="[OSDI02 §5.3][ESX25-p343][VS4-ATTR][VS-ADV70]")
    fast_time_constant_ns: int = time(FAST_TIME_CONSTANT_NS, "time constant of the fast "
                                      "average (%ACTVF)", lo=0, lo_open=True,
                                      hi=86400 * NS_PER_S,
                                      source="derived: gain 0.5 per 30 s fitted to "
                                      "[OSDI02 Fig. 6]")
    slow_time_constant_ns: int = time(SLOW_TIME_CONSTANT_NS, "time constant of the slow "
                                      "average (%ACTVS)", lo=0, lo_open=True,
                                      hi=86400 * NS_PER_S,
                                      source="derived: gain 0.2 per 30 s fitted to "
                                      "[OSDI02 Fig. 6]")
    min_active_frac: float | None = frac(None, "Mem.SampleActivePctMin / 100: the estimate's "
                                         "floor", hi=0.1, optional=True,
                                         none="as the profile: 1 % for esxi6, 0 before",
                                         source="[LAMW]")

    def __post_init__(self) -> None:
        check(self)
        if self.slow_time_constant_ns < self.fast_time_constant_ns:
            raise fail(self, "slow_time_constant_ns", "at least the fast time constant "
                       f"({self.fast_time_constant_ns / NS_PER_S:g} s)")

    def for_profile(self, profile: str) -> SamplerConfig:
        """This configuration with what it leaves None taken from ``profile``'s defaults."""
        period_ns, floor = PROFILE_SAMPLING[profile]
        return replace(self, period_ns=period_ns if self.period_ns is None else self.period_ns,
                       min_active_frac=floor if self.min_active_frac is None
                       else self.min_active_frac)

    @property
    def fast_gain(self) -> float:
        """The fast average's step a period."""
        return period_gain(self._period(), self.fast_time_constant_ns)

    @property
    def slow_gain(self) -> float:
        """The slow average's step a period."""
        return period_gain(self._period(), self.slow_time_constant_ns)

    def _period(self) -> int:
        if self.period_ns is None:
            raise ConfigError("sampling: the period is not resolved (for_profile)")
        return self.period_ns


#: The default profile's sampling (esxi6: vSphere's 60 s period and 1 % floor).
DEFAULT_SAMPLER_CONFIG = SamplerConfig().for_profile("esxi6")


class ActiveMemorySampler:
    """The working-set estimator of one VM.

    Args:
        n_ppns: the VM's configured memory in pages.
        rng: the stream the samples are drawn from.
        config: parameters.
    """

    def __init__(self, n_ppns: int, rng: np.random.Generator,
                 config: SamplerConfig = DEFAULT_SAMPLER_CONFIG):
        if config.period_ns is None or config.min_active_frac is None:
            config = config.for_profile("esxi6")
        self.n_ppns = n_ppns
        self.rng = rng
        self.config = config
        self._fast_gain = config.fast_gain
        self._slow_gain = config.slow_gain
        self.n_sample = min(config.sample_pages, n_ppns)
        # slot_of_ppn[p] is p's index in the current sample, or -1 (in the smallest
        # signed integer type that holds the slots: a byte per page for 100 samples).
        self._slot_dtype = np.min_scalar_type(-max(1, self.n_sample))
        self.slot_of_ppn = np.full(n_ppns, -1, dtype=self._slot_dtype)
        self.sample = np.zeros(0, dtype=np.int64)
        self.touched = np.zeros(self.n_sample, dtype=np.bool_)
        self.slow = 0.0
        self.fast = 0.0
        self.last_frac = 0.0  # the touched fraction of the last whole period
        self.periods = 0
        self._period = Period(config.period_ns)  # due at the first advance: a sample at once

    def start_period(self, now_ns: int) -> np.ndarray:
        """Draw a new sample; returns its PPNs (whose mappings the caller makes trap)."""
        self.slot_of_ppn[self.sample] = -1
        self.sample = np.sort(self.rng.choice(self.n_ppns, self.n_sample, replace=False))
        self.slot_of_ppn[self.sample] = np.arange(self.n_sample, dtype=self._slot_dtype)
        self.touched[:] = False
        self._period.start(now_ns)
        return self.sample

    def observe(self, ppns: np.ndarray) -> None:
        """The guest touched ``ppns`` (any order, repeats allowed)."""
        if self.sample.size == 0:
            return
        slots = self.slot_of_ppn[np.asarray(ppns, dtype=np.int64)]
        self.touched[slots[slots >= 0]] = True

    def end_period(self) -> float:
        """Close the period: fold its touched fraction into the averages; returns it."""
        frac = self.running_frac
        self.slow += self._slow_gain * (frac - self.slow)
        self.fast += self._fast_gain * (frac - self.fast)
        self.last_frac = frac
        self.periods += 1
        return frac

    def advance(self, now_ns: int) -> np.ndarray | None:
        """Roll periods forward to ``now_ns``; returns a new sample if one was drawn."""
        if not self._period.due(now_ns):
            return None
        if self.sample.size:  # not the first: the running period ends
            self.end_period()
        return self.start_period(now_ns)

    @property
    def running_frac(self) -> float:
        """The touched fraction of the running period so far."""
        return float(self.touched.mean()) if self.sample.size else 0.0

    @property
    def current(self) -> float:
        """The fast average with the running period's touches folded in (%ACTVN)."""
        return self.fast + self._fast_gain * (self.running_frac - self.fast)

    @property
    def touched_frac(self) -> float:
        """What the sample says is touched now (TCHD): the running period, or the last one.

        A period starts at zero touches, so until it has counted as many as the
        last whole period, that period's fraction stands.
        """
        return max(self.running_frac, self.last_frac)

    @property
    def active_frac(self) -> float:
        """The estimate: the largest of the three averages, floored."""
        return max(self.slow, self.fast, self.current, self.config.min_active_frac or 0.0)

    @property
    def active_pages(self) -> int:
        """The estimated working set in pages."""
        return int(round(self.active_frac * self.n_ppns))

    def pages(self, frac: float) -> int:
        """A fraction of the VM's memory in pages."""
        return int(round(frac * self.n_ppns))


def arm_sampling(vm: VmState, ppns: np.ndarray) -> None:
    """A sampling period starts: make the next touch of each of ``ppns`` trap.

    Pages of the previous sample never touched are disarmed first (their
    mappings come back), so only this period's sample traps.
    """
    if vm.n_armed:
        vm.paging.clear_traps(np.flatnonzero(vm.paging.trap))
    ppns = sorted_unique(np.asarray(ppns, dtype=np.int64))
    vm.paging.arm_traps(ppns)
    vm.n_armed = int(ppns.size)


def sampling_trap(vm: VmState, ppns: np.ndarray) -> None:
    """Armed ``ppns`` (distinct) were touched: count, charge, report, restore."""
    vm.paging.clear_traps(ppns)
    vm.n_armed -= int(ppns.size)
    vm.counters.sampling_traps += int(ppns.size)
    # An exit and back: the frame is there, only its mapping is restored.
    vm.counters.fault_time_ns += ppns.size * vm.costs.vmexit_ns
    if vm.services.touch_stamps:
        vm.last_touch_stamp[ppns] = vm.clock.stamp
    if vm.sampler is not None:
        vm.sampler.observe(ppns)


def observe_touches(vm: VmState, ppns: np.ndarray) -> None:
    """The guest touched backed ``ppns``: armed ones trap, all are stamped and reported."""
    if vm.n_armed:  # the guest's own touch of an armed page traps as well
        armed = ppns[vm.paging.trap[ppns]]
        if armed.size:
            sampling_trap(vm, np.unique(armed))
    if vm.services.touch_stamps:
        vm.last_touch_stamp[ppns] = vm.clock.stamp
    if vm.sampler is not None:
        vm.sampler.observe(ppns)
