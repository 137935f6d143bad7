"""``MachineMemory.check_invariants`` refuses every broken frame table it claims to rule out.

Each test builds a small valid table (frames of two VMs and the hypervisor,
frames freed back, a 2 MiB run taken out of the middle of the free stack),
checks that it passes, breaks it in one way and expects
:class:`InvariantViolation`.
"""

from __future__ import annotations

import numpy as np
import pytest

from hvmem.errors import InvariantViolation
from hvmem.hardware.frames import FREE, HYPERVISOR, MachineMemory

RUN = 8  # frames of the aligned run taken (a stand-in for a 2 MiB large page)


def small_table():
    """32 frames: VM 0 holds 4 and a run of 8, VM 1 holds 3, the hypervisor 1."""
    mem = MachineMemory(32)
    vm0 = mem.alloc(0, 4)
    mem.ppn[vm0] = np.arange(4)
    mem.ppn[mem.alloc(1, 3)] = np.arange(3)
    mem.alloc_one(HYPERVISOR)
    mem.free(vm0[1:3])  # back on the stack, with their data and last owner
    base = int(mem.alloc_runs(0, 1, RUN)[0])
    mem.ppn[base:base + RUN] = np.arange(100, 100 + RUN)
    assert mem.n_stale == RUN  # the run's frames are still on the stack, marked
    mem.check_invariants()
    return mem


def free_frame(mem):
    return int(np.flatnonzero(mem.owner == FREE)[0])


def held_frame(mem):
    return int(np.flatnonzero(mem.owner == 1)[0])


def break_free_twice(mem):
    mem.free_stack[mem.top] = free_frame(mem)
    mem.top += 1
    mem.n_free += 1


def break_free_but_owned(mem):
    mem.owner[free_frame(mem)] = 1  # still on the stack


def break_owned_marked_free(mem):
    mem.owner[held_frame(mem)] = FREE  # not on the stack


def break_free_count(mem):
    mem.n_free -= 1


def break_free_frame_mapped(mem):
    mem.refcount[free_frame(mem)] = 1


def break_stale_count(mem):
    mem.n_stale -= 1


def break_stale_mark_on_free_frame(mem):
    frame = free_frame(mem)
    mem.stale[frame] = True  # a free frame the next pop would skip for good
    mem.n_stale += 1


def break_free_frame_reverse_map(mem):
    mem.ppn[free_frame(mem)] = 3


def break_last_owner(mem):
    # Freed and taken by VM 0, the frame would keep VM 1's data, unzeroed.
    mem.last_owner[held_frame(mem)] = 0


def break_hypervisor_last_owner(mem):
    mem.last_owner[np.flatnonzero(mem.owner == HYPERVISOR)[0]] = 1


BREAKS = {
    "a frame on the free list twice": (break_free_twice, "free list twice"),
    "an owned frame on the free list": (break_free_but_owned, "disagree"),
    "a frame marked free but not on the list": (break_owned_marked_free, "disagree"),
    "a wrong free count": (break_free_count, "free count"),
    "a free frame with a mapping": (break_free_frame_mapped, "free frame has mappings"),
    "a wrong count of marked frames": (break_stale_count, "marked wrongly"),
    "a free frame marked as taken": (break_stale_mark_on_free_frame, "marked wrongly"),
    "a free frame naming a guest page": (break_free_frame_reverse_map, "names a guest page"),
    "a VM frame whose last owner is another VM": (break_last_owner, "last owner"),
    "a hypervisor frame whose last owner is a VM": (break_hypervisor_last_owner, "last owner"),
}


@pytest.mark.parametrize("name", list(BREAKS))
def test_frame_table_invariants_catch(name):
    mem = small_table()
    corrupt, message = BREAKS[name]
    corrupt(mem)
    with pytest.raises(InvariantViolation, match=message):
        mem.check_invariants()
