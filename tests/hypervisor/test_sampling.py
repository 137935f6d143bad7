import numpy as np
import pytest

from hvmem.errors import ConfigError
from hvmem.guest.kernel import GuestConfig, GuestKernel
from hvmem.guest.pages import PageKind
from hvmem.hardware.mmu import Mmu
from hvmem.hardware.tlb import Tlb
from hvmem.hypervisor.sampling import ActiveMemorySampler, SamplerConfig, time_constant_ns
from hvmem.units import NS_PER_S
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind


def sampler(n=10_000, **kw):
    return ActiveMemorySampler(n, np.random.default_rng(1), SamplerConfig(**kw))


def run_periods(s, active_frac, periods, rng):
    """Each period the guest touches a random active_frac of its pages."""
    t = 0
    s.advance(t)
    for _ in range(periods):
        touched = rng.choice(s.n_ppns, int(active_frac * s.n_ppns), replace=False)
        s.observe(touched)
        t += s.config.period_ns
        s.advance(t)


def test_estimate_converges_to_the_touched_fraction():
    s = sampler(sample_pages=400)
    run_periods(s, 0.3, 30, np.random.default_rng(2))
    assert abs(s.slow - 0.3) < 0.08 and abs(s.fast - 0.3) < 0.1


def test_rises_fast_and_falls_slowly():
    rng = np.random.default_rng(3)
    s = sampler(sample_pages=400)
    run_periods(s, 0.1, 20, rng)
    run_periods(s, 0.8, 1, rng)
    after_rise = s.active_frac
    assert after_rise > 0.4  # one busy period already shows through the fast average
    run_periods(s, 0.1, 2, rng)
    # Two idle periods later the slow average still holds the estimate up.
    assert s.active_frac > 0.2
    run_periods(s, 0.1, 40, rng)
    assert s.active_frac < 0.2


def test_current_period_counts_incrementally():
    s = sampler(n=1000, sample_pages=100)
    sample = s.advance(0)
    assert s.active_frac == pytest.approx(0.01)  # the floor
    s.observe(sample[:50])
    gain = s.config.fast_gain  # 0.75 a 60 s period: 1 - exp(-60 / 43.3)
    assert gain == pytest.approx(0.75, abs=1e-3)
    assert s.current == pytest.approx(0.5 * gain)  # fast 0 + gain * (0.5 - 0)
    s.observe(sample[:50])  # repeats count once
    assert s.current == pytest.approx(0.5 * gain)


def test_periods_roll_on_time():
    s = sampler(n=1000, period_ns=10 * NS_PER_S)
    s.advance(0)
    assert s.advance(5 * NS_PER_S) is None
    assert s.advance(10 * NS_PER_S) is not None and s.periods == 1


def test_bad_config():
    with pytest.raises(ConfigError, match="sample_pages"):
        SamplerConfig(sample_pages=0)
    with pytest.raises(ConfigError, match="fast_time_constant"):
        SamplerConfig(fast_time_constant_ns=0)
    with pytest.raises(ConfigError, match="slow_time_constant"):
        SamplerConfig(slow_time_constant_ns=NS_PER_S)


# -- sampling by traps (mmu fidelity) --------------------------------------------------

N_PPNS = 4096  # a 16 MiB guest
REGION = 3072  # pages its one process maps


def trapping_guest(make_host, make_vm, paging):
    """A guest whose references go through its vCPU's MMU, sampled with 1 s periods."""
    host = make_host(2 * N_PPNS, paging)
    host_vm, tables = make_vm(host, N_PPNS)
    mmu = Mmu(host_vm.vm_id, Tlb(64, 4))
    host_vm.paging.attach(mmu)
    kernel = GuestKernel(GuestConfig(memory_pages=N_PPNS), host_vm, tables,
                         np.random.default_rng(0), mmu=mmu)
    kernel.apply_op(MemoryOp(MemoryOpKind.MAP, 0, 0, REGION))
    # 1 s periods, with the averages' gains per period those of ESX's 30 s (0.5, 0.2).
    s = sampler(N_PPNS, sample_pages=400, period_ns=NS_PER_S,
                fast_time_constant_ns=time_constant_ns(0.5, NS_PER_S),
                slow_time_constant_ns=time_constant_ns(0.2, NS_PER_S))
    host_vm.sampler = s
    return host, host_vm, kernel, s


def uniform_batch(rng, pages, n_refs):
    """``n_refs`` references spread uniformly over ``pages``, a third of them writes."""
    vpns = rng.choice(pages, n_refs)
    return AccessBatch(np.zeros(n_refs, np.int32), vpns, rng.random(n_refs) < 0.3,
                       np.ones(n_refs, np.int64), rng.integers(1, 1 << 60, n_refs, dtype=np.uint64))


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_traps_track_a_uniform_quarter_of_memory(make_host, make_vm, paging):
    host, host_vm, kernel, s = trapping_guest(make_host, make_vm, paging)
    rng = np.random.default_rng(4)
    working_set = rng.choice(REGION, N_PPNS // 4, replace=False)  # 25 % of the guest's memory
    traps = host_vm.counters.sampling_traps
    for period in range(8):
        now = period * NS_PER_S
        host.now_ns = now
        kernel.access_mmu(uniform_batch(rng, working_set, 40_000), now, host_vm)
        if period:
            # Every trap this period was the first touch of a distinct sampled page,
            # and every sampled page the references touched trapped.
            ptes = kernel.processes[0].space.page_table.leaf_entries(working_set)
            used = (ptes >> np.uint64(12)) & np.uint64((1 << 40) - 1)
            touched = set(used.astype(np.int64).tolist())
            if paging == "nested":  # the guest's table pages are read by every 2-D walk
                touched |= set(np.flatnonzero(kernel.kind == PageKind.TABLE).tolist())
            expected = len(touched & set(s.sample.tolist()))
            assert host_vm.counters.sampling_traps - traps == expected == s.touched.sum()
            traps = host_vm.counters.sampling_traps
        drawn = s.advance(now)
        host_vm.arm_sampling(drawn)
    assert s.periods == 7
    assert abs(s.slow - 0.25) < 0.06 and abs(s.active_frac - 0.25) < 0.08
    host.check_invariants()
    kernel.check_invariants()


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_an_armed_page_traps_once_and_its_data_survives(make_host, make_vm, paging):
    host, host_vm, kernel, s = trapping_guest(make_host, make_vm, paging)
    rng = np.random.default_rng(5)
    batch = uniform_batch(rng, np.arange(8), 64)
    kernel.access_mmu(batch, 0, host_vm)
    ppns = np.flatnonzero(kernel.kind == PageKind.ANON)
    before = host_vm.read_pages(ppns)[0]
    host_vm.arm_sampling(ppns[:4])
    fault_ns = host_vm.counters.fault_time_ns
    reads = AccessBatch(np.zeros(16, np.int32), np.repeat(np.arange(8), 2),
                        np.zeros(16, np.bool_), np.ones(16, np.int64), np.zeros(16, np.uint64))
    result = kernel.access_mmu(reads, NS_PER_S, host_vm)
    assert host_vm.counters.sampling_traps == 4 and host_vm.n_armed == 0
    assert host_vm.counters.fault_time_ns - fault_ns == 4 * host.costs.vmexit_ns  # an exit each
    assert result.time_ns >= 4 * host.costs.vmexit_ns
    assert not host_vm.paging.trap.any()
    kernel.access_mmu(reads, 2 * NS_PER_S, host_vm)
    assert host_vm.counters.sampling_traps == 4  # mappings are back: no more exits
    assert np.array_equal(host_vm.read_pages(ppns)[0], before)
    host.check_invariants()


def test_page_fidelity_sampling_watches_the_bus_and_arms_nothing(make_host, make_vm):
    host, host_vm, kernel, s = trapping_guest(make_host, make_vm, "nested")
    drawn = s.advance(0)
    kernel.access(uniform_batch(np.random.default_rng(6), np.arange(REGION), 5000).aggregated(),
                  0)
    assert s.touched.sum() > 0 and host_vm.counters.sampling_traps == 0
    assert drawn is not None and not host_vm.paging.trap.any()
