"""Tests of policy.samples: sample validation, share presets, balloon maximum, plans."""

from __future__ import annotations

import dataclasses

import pytest

from hvmem.errors import ConfigError, InvariantViolation
from hvmem.policy.samples import (
    DEFAULT_CTL_MAX_FRAC,
    SHARES_PER_MIB,
    HostPlan,
    HostSample,
    Plans,
    SharingMode,
    VmPlan,
    VmSample,
    balloon_max_for,
    shares_for,
)
from hvmem.policy.states import MemState


def vm(**overrides: object) -> VmSample:
    fields: dict[str, object] = dict(
        name="vm1",
        configured_mib=4096.0,
        shares=40960,
        consumed_mib=2048.0,
        active_mib=512.0,
        balloon_max_mib=2662.4,
    )
    fields.update(overrides)
    return VmSample(**fields)  # type: ignore[arg-type]


def host(**overrides: object) -> HostSample:
    fields: dict[str, object] = dict(
        time_s=0.0,
        total_mib=16384.0,
        free_mib=4096.0,
        state=MemState.HIGH,
        minfree_mib=737.28,
    )
    fields.update(overrides)
    return HostSample(**fields)  # type: ignore[arg-type]


# -- presets ------------------------------------------------------------------------------


def test_share_presets_are_5_10_20_per_mib():
    assert dict(SHARES_PER_MIB) == {"low": 5, "normal": 10, "high": 20}
    # 256 MiB VM at normal: 10 x 256 = 2560 shares (the ESX 2.5 example [ESX25-p341])
    assert shares_for("normal", 256) == 2560
    assert shares_for("low", 256) == 1280
    assert shares_for("HIGH", 256) == 5120
    assert shares_for(1234, 256) == 1234


@pytest.mark.parametrize("bad", ["medium", -1, 1.5, True])
def test_bad_shares_are_config_errors(bad):
    with pytest.raises(ConfigError, match="shares"):
        shares_for(bad, 256)


def test_balloon_max_is_65_percent_or_maxmemctl():
    assert DEFAULT_CTL_MAX_FRAC == 0.65
    # 0.65 x 4096 = 2662.4
    assert balloon_max_for(4096) == pytest.approx(2662.4)
    assert balloon_max_for(4096, maxmemctl_mib=1024) == 1024
    assert balloon_max_for(4096, maxmemctl_mib=8192) == pytest.approx(2662.4)
    assert balloon_max_for(4096, ctl_max_frac=0.5) == 2048
    with pytest.raises(ConfigError, match="ctl_max_frac"):
        balloon_max_for(4096, ctl_max_frac=1.0)


# -- VmSample -----------------------------------------------------------------------------


def test_vm_sample_derived_values():
    sample = vm(limit_mib=3000.0, balloon_mib=100.0, swapped_mib=50.0, compressed_mib=25.0)
    assert sample.ceiling_mib == 3000.0
    assert vm().ceiling_mib == 4096.0
    assert sample.reclaimed_mib == 175.0
    # 512 / 2048 = 0.25
    assert sample.active_frac == 0.25
    assert vm(consumed_mib=0.0).active_frac == 1.0


def test_vm_sample_is_frozen_with_slots():
    sample = vm()
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.consumed_mib = 1.0  # type: ignore[misc]
    assert not hasattr(sample, "__dict__")


@pytest.mark.parametrize(
    ("overrides", "error", "match"),
    [
        ({"name": ""}, ConfigError, "name"),
        ({"configured_mib": 0.0}, ConfigError, "configured_mib must be positive"),
        ({"reservation_mib": 5000.0}, ConfigError, "reservation 5000 MiB exceeds configured"),
        ({"reservation_mib": 1000.0, "limit_mib": 500.0}, ConfigError, "limit 500 MiB is below"),
        ({"shares": -5}, ConfigError, "shares"),
        ({"balloon_max_mib": 5000.0}, ConfigError, "balloon_max_mib"),
        ({"consumed_mib": -1.0}, InvariantViolation, "consumed_mib"),
        ({"active_mib": float("nan")}, InvariantViolation, "active_mib"),
        ({"guest_free_mib": -3.0}, InvariantViolation, "guest_free_mib"),
    ],
)
def test_vm_sample_rejects_bad_values(overrides, error, match):
    with pytest.raises(error, match=match):
        vm(**overrides)


def test_vm_sample_error_names_the_vm():
    with pytest.raises(ConfigError, match="vm web"):
        vm(name="web", reservation_mib=9999.0)


# -- HostSample ---------------------------------------------------------------------------


def test_host_sample_used_excludes_cache():
    # 16384 - 4096 free - 2048 cache = 10240
    assert host(cache_mib=2048.0).used_mib == 10240.0


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"total_mib": 0.0}, InvariantViolation),
        ({"free_mib": -1.0}, InvariantViolation),
        ({"state": 2}, InvariantViolation),
        ({"time_s": float("inf")}, InvariantViolation),
        ({"profile": "esx9"}, ConfigError),
        ({"profile": "esx4", "state": MemState.CLEAR}, InvariantViolation),
    ],
)
def test_host_sample_rejects_bad_values(overrides, error):
    with pytest.raises(error):
        host(**overrides)


# -- plans --------------------------------------------------------------------------------


def test_plans_is_a_read_only_mapping_with_a_host_part():
    one = VmPlan(target_mib=1.0, balloon_target_mib=0.0, swap_target_mib=0.0)
    plans = Plans({"a": one}, HostPlan(sharing=SharingMode.STOP))
    assert dict(plans) == {"a": one}
    assert plans["a"] is one and len(plans) == 1 and "a" in plans
    assert plans.host.sharing is SharingMode.STOP
    with pytest.raises(TypeError):
        plans.vms["b"] = one  # type: ignore[index]
    assert Plans({"a": one}) == Plans({"a": one})


def test_vm_plan_rejects_negative_targets():
    with pytest.raises(InvariantViolation, match="balloon_target_mib"):
        VmPlan(target_mib=1.0, balloon_target_mib=-1.0, swap_target_mib=0.0)


def test_host_plan_scan_rate():
    # 400 pages every 10 ms = 40000 pages/s
    assert HostPlan(scan_pages=400, scan_sleep_ms=10.0).scan_rate_pages_s == 40000.0
    assert HostPlan().scan_rate_pages_s is None
