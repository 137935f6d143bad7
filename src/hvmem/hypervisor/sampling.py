"""Active-memory estimation by statistical sampling (Waldspurger, OSDI 2002 §5.3).

What is modelled
----------------
The hypervisor cannot see a guest's working set, so it samples it. At the
start of each period it picks ``n`` guest-physical pages uniformly at random
and makes their next access trap (ESX invalidates their cached mappings); the
first touch of a sampled page in the period counts once. At the end of the
period the touched fraction ``f = t / n`` estimates the fraction of memory the
guest actively uses::

    period k:   sample n pages --- touches counted --- f_k = t / n
    slow   <- slow + A_SLOW * (f_k - slow)          stable
    fast   <- fast + A_FAST * (f_k - fast)          agile
    current = fast + A_FAST * (t_so_far / n - fast) the running period, incremental
    estimate = max(slow, fast, current), floored at min_active_frac

Taking the maximum makes the estimate rise quickly when a guest gets busy and
fall slowly when it goes idle, which is what the idle memory tax needs.

Defaults: 100 pages per 60-second period (vSphere's Mem.SamplePeriod, 60 s;
ESX 1.5 used 30 s) [OSDI02 §5.3][VS4-ATTR]; gains A_FAST = 0.5 and A_SLOW = 0.2
are not published: they are fitted to the paper's Fig. 6 (docs/references.md,
derived values); the 1% floor is vSphere 6.5+'s Mem.SampleActivePctMin [LAMW]. How the
"current" average weights a partly elapsed period is not published either; this
model uses the running count as if the period had ended (it can only
underestimate, and the maximum hides that).

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

from dataclasses import dataclass

import numpy as np

from hvmem.core.period import Period
from hvmem.core.sets import sorted_unique
from hvmem.errors import ConfigError
from hvmem.hypervisor.vm_state import VmState
from hvmem.units import NS_PER_S

SAMPLE_PAGES = 100  # pages sampled per period [OSDI02 §5.3]
SAMPLE_PERIOD_NS = 60 * NS_PER_S  # Mem.SamplePeriod [VS4-ATTR]
FAST_GAIN = 0.5  # fitted to [OSDI02 Fig. 6] (docs/references.md, derived values)
SLOW_GAIN = 0.2  # fitted to [OSDI02 Fig. 6] (docs/references.md, derived values)
MIN_ACTIVE_FRAC = 0.01  # Mem.SampleActivePctMin = 1 in vSphere 6.5+ [LAMW]


@dataclass(frozen=True, slots=True)
class SamplerConfig:
    """Parameters of active-memory sampling."""

    sample_pages: int = SAMPLE_PAGES
    period_ns: int = SAMPLE_PERIOD_NS
    fast_gain: float = FAST_GAIN
    slow_gain: float = SLOW_GAIN
    min_active_frac: float = MIN_ACTIVE_FRAC

    def __post_init__(self) -> None:
        if self.sample_pages <= 0:
            raise ConfigError(f"sampling: sample_pages must be positive, found {self.sample_pages}")
        if self.period_ns <= 0:
            raise ConfigError("sampling: the period must be positive")
        for name in ("fast_gain", "slow_gain"):
            if not 0 < getattr(self, name) <= 1:
                value = getattr(self, name)
                raise ConfigError(f"sampling: {name} must be in (0, 1], found {value}")
        if not 0 <= self.min_active_frac <= 1:
            raise ConfigError("sampling: min_active_frac must be in [0, 1]")


class ActiveMemorySampler:
    """The working-set estimator of one VM.

    Args:
        n_ppns: the VM's configured memory in pages.
        rng: the stream the samples are drawn from.
        config: parameters.
    """

    def __init__(self, n_ppns: int, rng: np.random.Generator,
                 config: SamplerConfig = SamplerConfig()):
        self.n_ppns = n_ppns
        self.rng = rng
        self.config = config
        self.n_sample = min(config.sample_pages, n_ppns)
        # slot_of_ppn[p] is p's index in the current sample, or -1 (in the smallest
        # signed integer type that holds the slots: a byte per page for 100 samples).
        self._slot_dtype = np.min_scalar_type(-max(1, self.n_sample))
        self.slot_of_ppn = np.full(n_ppns, -1, dtype=self._slot_dtype)
        self.sample = np.zeros(0, dtype=np.int64)
        self.touched = np.zeros(self.n_sample, dtype=np.bool_)
        self.slow = 0.0
        self.fast = 0.0
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
        frac = float(self.touched.mean()) if self.n_sample else 0.0
        self.slow += self.config.slow_gain * (frac - self.slow)
        self.fast += self.config.fast_gain * (frac - self.fast)
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
    def current(self) -> float:
        """The fast average with the running period's touches folded in."""
        frac = float(self.touched.mean()) if self.sample.size else 0.0
        return self.fast + self.config.fast_gain * (frac - self.fast)

    @property
    def active_frac(self) -> float:
        """The estimate: the largest of the three averages, floored."""
        return max(self.slow, self.fast, self.current, self.config.min_active_frac)

    @property
    def active_pages(self) -> int:
        """The estimated working set in pages."""
        return int(round(self.active_frac * self.n_ppns))


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
    vm.last_touch_stamp[ppns] = vm.clock.stamp
    if vm.sampler is not None:
        vm.sampler.observe(ppns)


def observe_touches(vm: VmState, ppns: np.ndarray) -> None:
    """The guest touched backed ``ppns``: armed ones trap, all are stamped and reported."""
    if vm.n_armed:  # the guest's own touch of an armed page traps as well
        armed = ppns[vm.paging.trap[ppns]]
        if armed.size:
            sampling_trap(vm, np.unique(armed))
    vm.last_touch_stamp[ppns] = vm.clock.stamp
    if vm.sampler is not None:
        vm.sampler.observe(ppns)
