import numpy as np
import pytest

from hvmem.errors import ConfigError
from hvmem.hypervisor.sampling import ActiveMemorySampler, SamplerConfig
from hvmem.units import NS_PER_S


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
    assert s.current == pytest.approx(0.25)  # fast 0 + 0.5 * (0.5 - 0)
    s.observe(sample[:50])  # repeats count once
    assert s.current == pytest.approx(0.25)


def test_periods_roll_on_time():
    s = sampler(n=1000, period_ns=10 * NS_PER_S)
    s.advance(0)
    assert s.advance(5 * NS_PER_S) is None
    assert s.advance(10 * NS_PER_S) is not None and s.periods == 1


def test_bad_config():
    with pytest.raises(ConfigError, match="sample_pages"):
        SamplerConfig(sample_pages=0)
    with pytest.raises(ConfigError, match="fast_gain"):
        SamplerConfig(fast_gain=1.5)
