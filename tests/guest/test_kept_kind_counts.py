"""The pages per kind a guest kernel keeps equal a recount after any sequence of operations.

``GuestKernel.count`` reads counts kept at each change of a page's kind
(``core/counted.py``) rather than counting: random sequences of anonymous and
file-backed touches (demand-zero and file faults, reclaim to swap, page-cache
drops and write-backs, swap-ins), mappings given back, the balloon inflating
and deflating through the allocator, and free pages reported run on a guest
smaller than what it maps; after every step the kept counts must equal a
recount and the kernel's invariants hold.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from hvmem.guest.balloon_driver import BalloonDriver
from hvmem.guest.kernel import GuestConfig, GuestKernel, PageKind
from hvmem.hardware.page_table import TableStore
from hvmem.hardware.virtio_balloon import VirtioBalloon
from hvmem.hypervisor.host import Host
from hvmem.workloads.base import AccessBatch, MemoryOp, MemoryOpKind

GUEST_PAGES = 96
ANON_VPN, ANON_PAGES = 0, 120  # more than memory: some are swapped
FILE_VPN, FILE_PAGES = 0x200, 40


def batch(vpns, write: bool, ops=()):
    vpns = np.asarray(vpns, dtype=np.int64)
    n = vpns.size
    return AccessBatch(np.zeros(n, np.int32), vpns, np.full(n, write), np.ones(n, np.int64),
                       vpns.astype(np.uint64) + np.uint64(1), tuple(ops))


MAPS = (MemoryOp(MemoryOpKind.MAP, 0, ANON_VPN, ANON_PAGES, False),
        MemoryOp(MemoryOpKind.MAP, 0, FILE_VPN, FILE_PAGES, True))
OPS = st.one_of(
    st.tuples(st.just("anon"), st.lists(st.integers(0, ANON_PAGES - 1), max_size=60),
              st.booleans()),
    st.tuples(st.just("file"), st.lists(st.integers(0, FILE_PAGES - 1), max_size=30),
              st.booleans()),
    st.tuples(st.just("unmap_anon"), st.integers(0, ANON_PAGES - 8), st.just(False)),
    st.tuples(st.just("balloon"), st.integers(0, GUEST_PAGES // 3), st.just(False)),
    st.tuples(st.just("report"), st.just(0), st.just(False)),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(OPS, min_size=1, max_size=20), st.sampled_from(["lru", "fifo", "clock"]))
def test_kept_kind_counts_equal_a_recount_after_any_operations(ops, policy):
    run(ops, policy)


def test_every_kind_and_reclaim_are_reached():
    """Touches past memory swap and drop, the balloon holds pages, the kernel its own."""
    kernel = run([("anon", list(range(ANON_PAGES)), True), ("file", list(range(FILE_PAGES)), False),
                  ("balloon", 20, False), ("unmap_anon", 0, False), ("report", 0, False),
                  ("anon", list(range(20)), False), ("file", [0, 1], False)], "lru")
    assert kernel.counters.swap_outs > 0 and kernel.counters.file_reads > 0
    for kind in (PageKind.ANON, PageKind.FILE, PageKind.BALLOON, PageKind.KERNEL,
                 PageKind.TABLE):
        assert kernel.count(kind) > 0, kind.name


def run(ops, policy: str) -> GuestKernel:
    host = Host(1024, "nested")
    tables = TableStore(GUEST_PAGES, "g")
    vm = host.add_vm("g", GUEST_PAGES, tables)
    config = GuestConfig(GUEST_PAGES, 256, "ssd", policy, 1, kernel_bytes_per_page=256)
    kernel = GuestKernel(config, vm, tables, np.random.default_rng(0))
    device = VirtioBalloon(deflate_on_oom=True, free_page_reporting=True)
    driver = BalloonDriver(kernel, device)
    kernel.access(batch([], False, MAPS), 0)
    for step, (kind, arg, write) in enumerate(ops, start=1):
        now = step * 1_000_000_000
        if kind == "anon":
            kernel.access(batch(np.asarray(arg, np.int64) + ANON_VPN, write), now)
        elif kind == "file":
            kernel.access(batch(np.asarray(arg, np.int64) + FILE_VPN, write), now)
        elif kind == "unmap_anon":  # given back, then mapped again for later touches
            ops_ = (MemoryOp(MemoryOpKind.UNMAP, 0, arg, 8, False),
                    MemoryOp(MemoryOpKind.MAP, 0, arg, 8, False))
            kernel.access(batch([], False, ops_), now)
        elif kind == "balloon":
            device.set_target(arg)
            driver.poll(now)
        elif kind == "report":
            driver.report_free_pages()
        counted = np.bincount(kernel.kind, minlength=len(PageKind)).tolist()
        assert kernel.kind_counts.tolist() == counted
        assert kernel.count(PageKind.FILE) == counted[PageKind.FILE]
        kernel.check_invariants()
    return kernel
