"""Tests of policy.entitlement: idle tax, min-funding revocation, admission control."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.errors import ConfigError, InvariantViolation, OutOfMemoryError
from hvmem.policy.entitlement import (
    DEFAULT_TAX_FRAC,
    adjusted_ratio,
    admit,
    available_for_vms_mib,
    compute_targets,
    idle_cost,
    min_funding_revocation,
    taxed_cost_mib,
)
from hvmem.policy.samples import HostSample, VmSample
from hvmem.policy.states import MemState


def vm(name: str, **overrides: object) -> VmSample:
    """A 256 MiB VM with normal shares (10 x 256 = 2560), fully consumed."""
    fields: dict[str, object] = dict(
        name=name,
        configured_mib=256.0,
        shares=2560,
        consumed_mib=256.0,
        active_mib=256.0,
        balloon_max_mib=166.4,
    )
    fields.update(overrides)
    return VmSample(**fields)  # type: ignore[arg-type]


def targets(vms, available, tax):
    return dict(compute_targets(vms, available, tax_frac=tax).targets_mib)


# -- formulas -----------------------------------------------------------------------------


def test_idle_cost_k():
    # k = 1 / (1 - tau)
    assert idle_cost(0.0) == 1.0
    assert idle_cost(0.5) == 2.0
    assert idle_cost(0.75) == 4.0
    assert idle_cost(0.9) == pytest.approx(10.0)
    assert DEFAULT_TAX_FRAC == 0.75
    for bad in (-0.1, 1.0, 0.995, "0.75"):
        with pytest.raises(ConfigError, match="tax_frac"):
            idle_cost(bad)  # type: ignore[arg-type]


def test_adjusted_ratio_is_the_papers_rho():
    # rho = S / (P (f + k (1 - f))); S = 2560, P = 256, f = 0.25, k = 4:
    # 256 x (0.25 + 4 x 0.75) = 256 x 3.25 = 832; 2560 / 832 = 3.0769...
    assert adjusted_ratio(2560, 256, 0.25, 0.75) == pytest.approx(2560 / 832)
    # tau = 0: plain shares per MiB, 2560 / 256 = 10
    assert adjusted_ratio(2560, 256, 0.25, 0.0) == 10.0
    assert adjusted_ratio(2560, 0, 0.25, 0.75) == math.inf
    # same VM, working set held fixed: cost(256) = 64 active + 4 x 192 idle = 832
    assert taxed_cost_mib(256, 64, 0.75) == 832.0
    # below the working set every page is active: cost(50) = 50
    assert taxed_cost_mib(50, 64, 0.75) == 50.0


# -- hand-computed equilibria ---------------------------------------------------------------


def test_equal_shares_no_tax_split_evenly():
    # tau = 0: rho = S / T, equal S -> equal T: 360 / 2 = 180 each
    # (OSDI02 Fig. 7 shows 179 MB each for two equal-share 256 MB VMs).
    result = compute_targets(
        [vm("a", active_mib=200.0), vm("b", active_mib=20.0)], 360.0, tax_frac=0.0
    )
    assert dict(result.targets_mib) == {"a": 180.0, "b": 180.0}
    assert result.constrained
    # price = S / T = 2560 / 180
    assert result.price == pytest.approx(2560 / 180)


def test_idle_tax_gives_the_idle_vm_less():
    # tau = 0.75, k = 4; active a: A = 200, mostly idle b: A = 20; 360 MiB to divide.
    # Both above their working sets: T = A + (S x - A) / k with the same S x = c:
    #   T_a + T_b = 200 + (c - 200)/4 + 20 + (c - 20)/4 = 220 + (2c - 220)/4 = 360
    #   -> 2c - 220 = 560 -> c = 390
    #   T_a = 200 + 190/4 = 247.5,  T_b = 20 + 370/4 = 112.5  (sum 360)
    # check: rho_a = S / (200 + 4 x 47.5) = S/390 = S / (20 + 4 x 92.5) = rho_b
    vms = [vm("a", active_mib=200.0), vm("b", active_mib=20.0)]
    result = compute_targets(vms, 360.0, tax_frac=0.75)
    assert result.targets_mib["a"] == pytest.approx(247.5)
    assert result.targets_mib["b"] == pytest.approx(112.5)
    assert result.price == pytest.approx(2560 / 390)


def test_fully_idle_vm_against_fully_active_vm():
    # tau = 0.75: active a (A = 256) reaches its 256 MiB ceiling; idle b (A = 0) gets
    # T_b = S x / 4 with the rest: 360 - 256 = 104 (S x = 416 >= 256, so a is capped).
    vms = [vm("a", active_mib=256.0), vm("b", active_mib=0.0)]
    assert targets(vms, 360.0, 0.75) == pytest.approx({"a": 256.0, "b": 104.0})
    # no tax: 180 each whatever the activity
    assert targets(vms, 360.0, 0.0) == pytest.approx({"a": 180.0, "b": 180.0})


def test_reservation_is_a_floor():
    # tau = 0.75, a active (A = 256), b idle with a 150 MiB reservation: unconstrained
    # b would get 104 (previous test), so it is held at 150 and a gets 360 - 150 = 210.
    vms = [vm("a", active_mib=256.0), vm("b", active_mib=0.0, reservation_mib=150.0)]
    assert targets(vms, 360.0, 0.75) == pytest.approx({"a": 210.0, "b": 150.0})


def test_limit_is_a_ceiling():
    # tau = 0: 180 each, but a is limited to 150, so b gets 360 - 150 = 210.
    vms = [vm("a", limit_mib=150.0), vm("b")]
    assert targets(vms, 360.0, 0.0) == pytest.approx({"a": 150.0, "b": 210.0})


def test_shares_proportional_without_tax():
    # 400 MiB, shares 1000 : 3000 -> 100 : 300 (both within [0, 1024])
    vms = [
        vm("a", configured_mib=1024.0, shares=1000, balloon_max_mib=0.0),
        vm("b", configured_mib=1024.0, shares=3000, balloon_max_mib=0.0),
    ]
    assert targets(vms, 400.0, 0.0) == pytest.approx({"a": 100.0, "b": 300.0})


def test_unconstrained_vms_get_their_ceiling():
    vms = [vm("a"), vm("b", limit_mib=200.0)]
    result = compute_targets(vms, 1000.0)
    assert dict(result.targets_mib) == {"a": 256.0, "b": 200.0}
    assert not result.constrained and result.price == 0.0


def test_reservations_beyond_available_are_kept():
    # 80 + 80 = 160 MiB reserved but only 100 available: reservations win.
    vms = [vm("a", reservation_mib=80.0), vm("b", reservation_mib=80.0)]
    result = compute_targets(vms, 100.0)
    assert dict(result.targets_mib) == {"a": 80.0, "b": 80.0}
    assert result.price == math.inf


def test_zero_shares_get_exactly_the_reservation():
    # "0 shares means allocate exactly min" [ESX25-p341], even with memory to spare.
    vms = [vm("a"), vm("z", shares=0, reservation_mib=50.0)]
    assert targets(vms, 1000.0, 0.75) == {"a": 256.0, "z": 50.0}
    assert targets(vms, 200.0, 0.75) == pytest.approx({"a": 150.0, "z": 50.0})


def test_powered_off_vms_get_nothing_and_names_must_be_unique():
    vms = [vm("a"), vm("off", powered_on=False)]
    assert targets(vms, 1000.0, 0.75) == {"a": 256.0}
    with pytest.raises(InvariantViolation, match="'a'"):
        compute_targets([vm("a"), vm("a")], 100.0)
    with pytest.raises(ConfigError, match="available_mib"):
        compute_targets([vm("a")], -1.0)


def test_available_is_consumed_plus_free_above_the_target():
    host = HostSample(
        time_s=0.0, total_mib=16384.0, free_mib=1000.0, state=MemState.SOFT, minfree_mib=500.0
    )
    vms = [
        vm("a", configured_mib=4096.0, consumed_mib=2000.0),
        vm("b", configured_mib=4096.0, consumed_mib=3000.0),
        vm("off", configured_mib=4096.0, consumed_mib=4000.0, powered_on=False),
    ]
    # 2000 + 3000 + 1000 free - 500 target = 5500 (the powered-off VM does not count)
    assert available_for_vms_mib(host, vms, 500.0) == 5500.0
    assert available_for_vms_mib(host, vms[:0], 5000.0) == 0.0


# -- properties ---------------------------------------------------------------------------


@st.composite
def vm_lists(draw, min_size=1, max_size=6, unbounded=False):
    count = draw(st.integers(min_size, max_size))
    vms = []
    for i in range(count):
        configured = draw(st.integers(64, 4096)) * 1.0
        if unbounded:
            reservation, limit = 0.0, None
        else:
            reservation = draw(st.floats(0.0, configured)) if draw(st.booleans()) else 0.0
            limit = draw(st.one_of(st.none(), st.floats(reservation, configured * 1.5)))
        vms.append(
            VmSample(
                name=f"vm{i}",
                configured_mib=configured,
                reservation_mib=reservation,
                limit_mib=limit,
                shares=draw(st.integers(0 if not unbounded else 1, 100_000)),
                consumed_mib=draw(st.floats(0.0, configured)),
                active_mib=draw(st.floats(0.0, configured)),
                balloon_max_mib=0.65 * configured,
            )
        )
    return vms


taxes = st.sampled_from([0.0, 0.25, 0.5, 0.75, 0.9])


@given(vms=vm_lists(), available=st.floats(0.0, 20000.0), tax=taxes)
def test_targets_stay_within_reservation_and_ceiling(vms, available, tax):
    result = compute_targets(vms, available, tax_frac=tax)
    for sample in vms:
        target = result.targets_mib[sample.name]
        assert sample.reservation_mib - 1e-9 <= target <= sample.ceiling_mib + 1e-9
        assert target <= min(sample.configured_mib, sample.limit_mib or math.inf) + 1e-9


@given(vms=vm_lists(), available=st.floats(0.0, 20000.0), tax=taxes)
def test_targets_add_up_to_available_when_demand_exceeds_it(vms, available, tax):
    result = compute_targets(vms, available, tax_frac=tax)
    total = sum(result.targets_mib.values())
    reserved = sum(min(v.reservation_mib, v.ceiling_mib) for v in vms)
    demand = sum(v.ceiling_mib if v.shares else v.reservation_mib for v in vms)
    if reserved <= available:
        assert total <= available + 1e-6 * max(1.0, available)
    if reserved <= available < demand:
        assert total == pytest.approx(available, rel=1e-9, abs=1e-6)
    if demand <= available:
        assert total == pytest.approx(demand)


@given(vms=vm_lists(unbounded=True), frac=st.floats(0.01, 0.99), active_frac=st.floats(0, 1))
def test_no_tax_gives_targets_proportional_to_shares(vms, frac, active_frac):
    # Equal activity (same active fraction everywhere), tau = 0; choose the available
    # memory so that no VM reaches its ceiling: available = frac x the smallest
    # configured x (shares total / that VM's shares) keeps every share of it below the
    # VM's ceiling.
    vms = [
        VmSample(
            name=v.name,
            configured_mib=v.configured_mib,
            shares=v.shares,
            consumed_mib=v.consumed_mib,
            active_mib=active_frac * v.configured_mib,
            balloon_max_mib=v.balloon_max_mib,
        )
        for v in vms
    ]
    total_shares = sum(v.shares for v in vms)
    available = frac * min(v.configured_mib * total_shares / v.shares for v in vms)
    result = compute_targets(vms, available, tax_frac=0.0)
    for v in vms:
        assert result.targets_mib[v.name] == pytest.approx(available * v.shares / total_shares)


@given(vms=vm_lists(), available=st.floats(0.0, 20000.0), tax=taxes)
def test_equilibrium_prices_are_equal_between_bounds(vms, available, tax):
    # Min-funding revocation's fixed point: every VM strictly between its bounds pays
    # the same price; VMs at their reservation pay no more, at their ceiling no less.
    result = compute_targets(vms, available, tax_frac=tax)
    if not result.constrained or math.isinf(result.price):
        return
    for v in vms:
        if v.shares == 0:
            continue
        target = result.targets_mib[v.name]
        active = min(v.active_mib, v.ceiling_mib)
        cost = taxed_cost_mib(target, active, tax)
        rho = math.inf if cost == 0 else v.shares / cost
        lo, hi = min(v.reservation_mib, v.ceiling_mib), v.ceiling_mib
        tol = 1e-6
        if hi - lo < 3 * tol:  # pinned: reservation == ceiling (or nearly)
            continue
        if lo + tol < target < hi - tol:
            assert rho == pytest.approx(result.price, rel=1e-6)
        elif target >= hi - tol:
            assert rho >= result.price * (1 - 1e-6)
        else:
            assert rho <= result.price * (1 + 1e-6) or target < tol


@settings(max_examples=40, deadline=None)
@given(vms=vm_lists(max_size=4), data=st.data(), tax=taxes)
def test_closed_form_matches_iterative_revocation(vms, data, tax):
    # The paper's loop with 1 MiB units lands within about a unit of the closed form.
    vms = [
        VmSample(
            name=v.name,
            configured_mib=min(v.configured_mib, 512.0),
            reservation_mib=min(v.reservation_mib, 512.0),
            limit_mib=None,
            shares=v.shares,
            consumed_mib=0.0,
            active_mib=min(v.active_mib, 512.0),
            balloon_max_mib=0.0,
        )
        for v in vms
    ]
    demand = sum(v.configured_mib for v in vms)
    available = data.draw(st.floats(0.0, demand))
    closed = compute_targets(vms, available, tax_frac=tax).targets_mib
    iterative = min_funding_revocation(vms, available, tax_frac=tax, unit_mib=0.25)
    for v in vms:
        assert iterative[v.name] == pytest.approx(closed[v.name], abs=2.0)


# -- admission control --------------------------------------------------------------------


def running_vms():
    # reserved: (2048 + 100) + (4096 + 100) = 6344 MiB
    return [
        vm("r1", configured_mib=4096.0, reservation_mib=2048.0, overhead_mib=100.0),
        vm("r2", configured_mib=8192.0, reservation_mib=4096.0, overhead_mib=100.0),
        vm("stopped", configured_mib=8192.0, reservation_mib=8192.0, powered_on=False),
    ]


def test_admit_when_reservation_and_overhead_fit():
    new = vm("small", configured_mib=2048.0, reservation_mib=1024.0, overhead_mib=64.0)
    result = admit(8192.0, running_vms(), new)
    # unreserved = 8192 - 6344 = 1848 >= 1024 + 64 = 1088
    assert result and result.admitted
    assert result.needed_mib == 1088.0 and result.unreserved_mib == 1848.0
    result.require()  # does not raise


def test_admit_refuses_with_a_message_naming_the_vm_and_numbers():
    new = vm("big", configured_mib=4096.0, reservation_mib=2048.0, overhead_mib=64.0)
    result = admit(8192.0, running_vms(), new)
    assert not result
    assert result.message == (
        "cannot power on big: reservation 2048 MiB + overhead 64 MiB = 2112 MiB exceeds "
        "unreserved host memory 1848 MiB (host 8192 MiB, hypervisor 0 MiB, 2 running VMs "
        "reserve 6344 MiB)"
    )
    assert "\n" not in result.message
    with pytest.raises(OutOfMemoryError, match="cannot power on big"):
        result.require()


def test_admit_counts_the_hypervisor_and_swap():
    new = vm("small", configured_mib=4096.0, reservation_mib=1024.0, overhead_mib=64.0)
    # 8192 - 1000 - 6344 = 848 < 1088
    assert not admit(8192.0, running_vms(), new, host_reserved_mib=1000.0)
    # swap: 4096 - 1024 = 3072 MiB needed, 2000 free
    refused = admit(8192.0, running_vms(), new, unreserved_swap_mib=2000.0)
    assert not refused and "swap" in refused.message and "3072 MiB" in refused.message
    assert admit(8192.0, running_vms(), new, unreserved_swap_mib=4000.0)
