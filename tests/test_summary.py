"""RunResult.summary on a handful of hand-made rows, against numbers worked out by hand.

The goldens pin whole runs; these pin each field of the summary on rows small
enough to add up in one's head, so a summary that sums the wrong column, forgets
the tick length, peaks per VM instead of host-wide, or reads the first tick as
the end fails here with a number that shows which.

The rows: three VMs over three 2 s ticks (times 0, 2 and 4 s). ``a`` runs
throughout, ``b`` powers on at 2 s, ``c`` runs only the first tick (powered off
after it). Only the columns the summary reads are given.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hvmem import RunResult, load_scenario
from hvmem.results import STALL_CAUSES

#: Any scenario will do: the summary takes only its name from it.
SCENARIO = load_scenario(Path(__file__).resolve().parent / "golden" / "sharing.toml")
TICK_S = 2.0

# Per-VM columns the summary reads, in this order, one tuple per row.
COLUMNS = ("throughput", "slowdown", "MCTLSZ", "SWCUR", "ZIPPED", "CACHEUSD", "SHRDSVD",
           "SWR/s", "SWW/s", "ZIP/s", "UNZIP/s")
VM_ROWS = [
    # time_s, vm,   thr,  slow,  MCTLSZ, SWCUR, ZIPPED, CACHEUSD, SHRDSVD, SWR, SWW, ZIP, UNZIP
    (0.0, "a", (1.00, 1.00, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0)),
    (0.0, "c", (0.80, 1.25, 100.0, 50.0, 0.0, 0.0, 0.0, 0.0, 25.0, 0.0, 0.0)),
    (2.0, "a", (0.75, 1.25, 64.0, 8.0, 16.0, 4.0, 12.0, 1.0, 4.0, 8.0, 0.5)),
    (2.0, "b", (1.00, 1.00, 0.0, 0.0, 0.0, 0.0, 30.0, 0.0, 0.0, 0.0, 0.0)),
    # a is held back for two ticks' worth: its throughput clips at 0, its slowdown is 3.
    (4.0, "a", (0.00, 3.00, 32.0, 20.0, 14.0, 10.0, 6.0, 2.5, 6.0, 0.0, 2.0)),
    (4.0, "b", (0.90, 1.10, 16.0, 0.0, 8.0, 2.0, 40.0, 0.0, 0.0, 4.0, 0.0)),
]
HOST_STATES = [(0.0, "high"), (2.0, "soft"), (4.0, "high")]


def hand_result(vm_rows=VM_ROWS, host_states=HOST_STATES, *, complete=True) -> RunResult:
    result = RunResult(scenario=SCENARIO)
    for time_s, state in host_states:
        result.host_rows.append({"time_s": time_s, "tick_s": TICK_S, "state": state})
    for time_s, vm, values in vm_rows:
        result.vm_rows.append({"time_s": time_s, "tick_s": TICK_S, "vm": vm,
                               **dict(zip(COLUMNS, values, strict=True))})
    result.complete = complete
    result.ticks_done = len(host_states)
    return result


#: The rows above have no guest paging or stall-cause columns (a real guest's rows
#: lack them too): those fields sum nothing.
NO_GUEST_PAGING = {"guest_swap_in_mib": 0.0, "guest_swap_out_mib": 0.0,
                   **{f"stall_{cause}_s": 0.0 for cause in STALL_CAUSES}}

#: Worked out by hand from the rows above.
EXPECTED_VMS = {
    "a": {
        "ticks": 3,
        "mean_throughput": (1.0 + 0.75 + 0.0) / 3,
        # (1 - throughput) x tick: 0 + 0.25 x 2 + 1 x 2 (the clipped tick counts one tick)
        "stall_s": 2.5,
        "worst_slowdown": 3.0,
        "balloon_peak_mib": 64.0,
        "swapped_peak_mib": 20.0,
        "compressed_peak_mib": 16.0,  # ZIPPED, not net of the cache
        "shared_saved_peak_mib": 12.0,
        # rate x tick, summed: (0 + 1.0 + 2.5) x 2, (0 + 4 + 6) x 2, (0 + 8 + 0) x 2, ...
        "swap_in_mib": 7.0,
        "swap_out_mib": 20.0,
        "compress_mib": 16.0,
        "decompress_mib": 5.0,
        **NO_GUEST_PAGING,
    },
    "b": {
        "ticks": 2,
        "mean_throughput": (1.0 + 0.9) / 2,  # over the ticks it ran, not the run's three
        "stall_s": 0.1 * 2,
        "worst_slowdown": 1.1,
        "balloon_peak_mib": 16.0,
        "swapped_peak_mib": 0.0,
        "compressed_peak_mib": 8.0,
        "shared_saved_peak_mib": 40.0,
        "swap_in_mib": 0.0,
        "swap_out_mib": 0.0,
        "compress_mib": 8.0,
        "decompress_mib": 0.0,
        **NO_GUEST_PAGING,
    },
    "c": {
        "ticks": 1,
        "mean_throughput": 0.8,
        "stall_s": 0.2 * 2,
        "worst_slowdown": 1.25,
        "balloon_peak_mib": 100.0,
        "swapped_peak_mib": 50.0,
        "compressed_peak_mib": 0.0,
        "shared_saved_peak_mib": 0.0,
        "swap_in_mib": 0.0,
        "swap_out_mib": 50.0,
        "compress_mib": 0.0,
        "decompress_mib": 0.0,
        **NO_GUEST_PAGING,
    },
}

# Host-wide holdings per tick, summed over the VMs present then:
#   t=0: sharing 10 + 0 = 10, ballooning 0 + 100 = 100, compression 0, swapping 0 + 50 = 50
#   t=2: sharing 12 + 30 = 42, ballooning 64 + 0 = 64, compression (16 - 4) + 0 = 12,
#        swapping 8 + 0 = 8
#   t=4: sharing 6 + 40 = 46, ballooning 32 + 16 = 48, compression (14 - 10) + (8 - 2) = 10,
#        swapping 20 + 0 = 20
EXPECTED_MECHANISMS = {
    "sharing": {"peak_mib": 46.0, "end_mib": 46.0},
    "ballooning": {"peak_mib": 100.0, "end_mib": 48.0},  # c's balloon left with c
    "compression": {"peak_mib": 12.0, "end_mib": 10.0},  # gross ZIPPED would be 22 and 22
    "swapping": {"peak_mib": 50.0, "end_mib": 20.0},
}


def test_summary_of_hand_made_rows_equals_the_hand_computed_one():
    summary = hand_result().summary()
    assert summary == {
        "scenario": SCENARIO.name,
        "complete": True,
        "ticks": 3,
        "time_in_state_s": {"high": 4.0, "soft": 2.0},
        "mechanisms": EXPECTED_MECHANISMS,
        "vms": {name: pytest.approx(fields, rel=1e-12, abs=1e-12)
                for name, fields in EXPECTED_VMS.items()},
    }
    json.dumps(summary)  # JSON-ready as it is


@pytest.mark.parametrize("field", sorted(EXPECTED_VMS["a"]))
def test_each_per_vm_field_by_hand(field):
    vms = hand_result().summary()["vms"]
    for name, expected in EXPECTED_VMS.items():
        assert vms[name][field] == pytest.approx(expected[field], rel=1e-12, abs=1e-12), name
    assert set(vms["a"]) == set(EXPECTED_VMS["a"])


def test_throughput_sum_is_not_left_in_the_summary():
    assert all("throughput_sum" not in vm for vm in hand_result().summary()["vms"].values())


def test_time_in_state_counts_tick_seconds_not_rows():
    states = [(0.0, "high"), (2.0, "clear"), (4.0, "soft"), (6.0, "hard"), (8.0, "low"),
              (10.0, "hard"), (12.0, "hard")]
    summary = hand_result(vm_rows=[], host_states=states).summary()
    assert summary["time_in_state_s"] == {"high": 2.0, "clear": 2.0, "soft": 2.0,
                                          "hard": 6.0, "low": 2.0}
    assert summary["ticks"] == 7


def test_mechanism_end_is_the_last_tick_even_when_lower_than_the_peak():
    # One VM whose swap and balloon rise and fall: the end is the last tick's holding.
    rows = [(float(t), "a", (1.0, 1.0, balloon, swapped, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))
            for t, balloon, swapped in ((0, 5.0, 1.0), (2, 9.0, 7.0), (4, 3.0, 2.0))]
    mech = hand_result(vm_rows=rows).summary()["mechanisms"]
    assert mech["ballooning"] == {"peak_mib": 9.0, "end_mib": 3.0}
    assert mech["swapping"] == {"peak_mib": 7.0, "end_mib": 2.0}


def test_compression_held_is_net_of_its_cache_and_may_be_negative():
    # A cache whose frames outnumber the pages they hold holds back less than nothing.
    rows = [(0.0, "a", (1.0, 1.0, 0.0, 0.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0, 0.0))]
    summary = hand_result(vm_rows=rows).summary()
    assert summary["mechanisms"]["compression"] == {"peak_mib": -1.0, "end_mib": -1.0}
    assert summary["vms"]["a"]["compressed_peak_mib"] == 2.0


def test_a_vm_that_never_stalls_and_holds_nothing():
    # A VM that never stalls and holds nothing: the starting values show through.
    rows = [(0.0, "a", (1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))]
    vm = hand_result(vm_rows=rows).summary()["vms"]["a"]
    assert vm["worst_slowdown"] == 1.0
    assert vm["stall_s"] == 0.0
    assert vm["balloon_peak_mib"] == vm["swapped_peak_mib"] == 0.0


def test_an_empty_incomplete_run():
    summary = hand_result(vm_rows=[], host_states=[], complete=False).summary()
    assert summary == {
        "scenario": SCENARIO.name,
        "complete": False,
        "ticks": 0,
        "time_in_state_s": {},
        "mechanisms": {name: {"peak_mib": 0.0, "end_mib": 0.0}
                       for name in ("sharing", "ballooning", "compression", "swapping")},
        "vms": {},
    }
    assert list(summary["mechanisms"]) == ["sharing", "ballooning", "compression", "swapping"]


def test_hand_numbers_are_finite_and_consistent():
    # The expected figures themselves: stall and throughput agree per VM.
    for name, vm in EXPECTED_VMS.items():
        lost = vm["ticks"] * TICK_S * (1.0 - vm["mean_throughput"])
        assert math.isclose(vm["stall_s"], lost, abs_tol=1e-12), name


def test_guest_paging_and_stall_causes_add_up_over_ticks():
    # Guest paging is a rate x tick; each cause is seconds of the tick, summed.
    rows = [(0.0, "a", (0.5, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)),
            (2.0, "a", (0.75, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0))]
    result = hand_result(vm_rows=rows)
    extra = [{"guest_swap_in_mib_s": 3.0, "guest_swap_out_mib_s": 1.0,
              "stall_guest_paging_s": 0.75, "stall_host_swap_in_s": 0.25},
             {"guest_swap_in_mib_s": 0.5, "guest_swap_out_mib_s": float("nan"),
              "stall_guest_paging_s": 0.25, "stall_blocked_s": 0.25}]
    rebuilt = RunResult(scenario=SCENARIO)
    rebuilt.host_rows.extend(result.host_rows)
    for row, more in zip(result.vm_rows, extra, strict=True):
        rebuilt.vm_rows.append({**row, **dict.fromkeys(
            (f"stall_{cause}_s" for cause in STALL_CAUSES), 0.0), **more,
            **({"guest_swap_out_mib_s": more["guest_swap_out_mib_s"]} if more else {})})
    vm = rebuilt.summary()["vms"]["a"]
    assert vm["guest_swap_in_mib"] == pytest.approx(3.0 * 2 + 0.5 * 2)
    assert vm["guest_swap_out_mib"] == pytest.approx(2.0)  # NaN counts nothing
    assert vm["stall_guest_paging_s"] == pytest.approx(1.0)
    assert vm["stall_host_swap_in_s"] == pytest.approx(0.25)
    assert vm["stall_blocked_s"] == pytest.approx(0.25)
    assert vm["stall_other_s"] == 0.0
