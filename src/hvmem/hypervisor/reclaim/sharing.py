"""Transparent page sharing: one machine page for identical guest pages.

What is modelled
----------------
A scanner visits guest pages in random order at a bounded rate, hashes each
page's content and looks the hash up in one host-wide table (OSDI 2002 §4.2)::

    lookup (salt, hash)
      empty        -> insert a *hint* (this page's frame), share nothing yet
      hint         -> rehash the hinted page: changed? drop the stale hint;
                      same content? promote its frame to a shared frame and map
                      both pages to it, copy-on-write
      shared frame -> full compare, map this page to it, free this page's frame

A shared frame is read-only in every guest's translations; a write to it
faults and the hypervisor breaks the sharing: the writer gets a private copy
(``break_cow``). A frame whose last sharer leaves goes back to the free list.

Hints are not write-protected (that would cost a fault per write to every
scanned page); they may go stale, which the rehash catches. Page contents are
64-bit tokens, so the "full comparison" compares tokens; the table is keyed by
a 64-bit mix of the token, as ESX keys by a 64-bit hash, and a hash match with
different contents (a false match) makes the page ineligible, as in ESX.

Salting: the salt is part of the key, so pages share only within one salt.
``across`` gives every VM salt 0 (pre-2014 behaviour, Mem.ShareForceSalting=0),
``within`` gives each VM its own salt (ESXi's default since 2015: intra-VM
sharing only, ShareForceSalting=2 without a configured salt), ``explicit`` takes
each VM's configured salt (ShareForceSalting=1: equal salts share)
[KB2097593][LAMW]. Zero pages follow the same rule.

Scan rate: by default a whole VM per ``Mem.ShareScanTime`` = 60 minutes, capped
at ``Mem.ShareRateMax`` = 1024 pages/s per VM [VS4-ATTR][LAMW]. Besides the
per-VM rate the host caps its total scan rate, as ESX always has
[OSDI02 §4.3]: ESX 2.5's ``ShareScanTotal`` = 200 pages/s (with ``ShareScanVM``
= 50 pages/s per VM) [ESX25-p343], vSphere's ``Mem.ShareScanGHz`` = 4 MB/s per
GHz of host CPU [VS4-ATTR][LAMW] (1024 pages/s per GHz). When the VMs' rates add
up to more than the cap, each VM's is scaled down by the same factor, so the
scanner's time is divided among the VMs as their own rates would divide it
(how ESX divides it is not published).

Data layout: the table (``sharing_table.py``) is open addressing over packed
12-byte slots, a probe mostly one cache line; a Numba kernel takes a batch of
candidates (in ascending PPN order the frame arrays are read sequentially);
frames carry a reverse map (``MachineMemory.ppn``), so a hint is just a frame
number and is stale when that frame no longer backs the page it did.

Scan speed: a probe misses the host's caches, so the kernel gathers a batch
first (frame, content, key: sequential reads) and then probes, with a prefetch
instruction PREFETCH candidates ahead for the home slot's line and the line of
the slot three on (where a probe that runs past its home lands), and
PREFETCH_FRAME ahead for the words of the frame the home slot names, which the
checks of a shared or hinted entry read. Prefetches rather than loads: the
branch on each probe's outcome mispredicts often, and a pending load would
hold the pipeline while a prefetch retires at once. The table's memory is
committed when it is allocated (host setup, or a growth) and the per-scan work
arrays are kept from scan to scan, so no scan pays the first touch of their
pages; the table's array starts small and grows in place as entries come
(``sharing_table.py``; results do not depend on its size). The kernel hands back this
VM's pages that joined a shared frame
compacted, with their old frames, so nothing after it walks the whole batch
again. The measurements behind these choices, and the alternatives that lost,
are in ``docs/design/sharing-scan.md``.

The scan driver (:func:`share_scan`, one VM's pages; :func:`scan_vms`, every
VM at its rate) runs the kernel and finishes what it leaves: pages inside a
host large page are hashed but not shared (``large_pages``), unless the host
breaks large pages by memory state, which breaks the visited ones first and
offers their hashed pages too [KB1021095][YB-STATES6]; the pages of a
promoted hint, which may belong to any VM, become SHARED and read-only in
that VM's translations; this VM's pages that joined a shared frame give their
own frame back. A write to a shared page gets a private copy
(``fault.break_cow``); :func:`leave_shared` drops a sharer and frees a frame
left with none.

Counters (pages): scanned, shared (mappings made), hints_inserted,
hint_promotions, stale_hints, already_shared, not_backed (page swapped,
ballooned or unbacked), page_tables (guest page-table pages, whose entries the
model keeps apart from content tokens, are not scanned), false_matches,
cow_breaks, frames_freed.

References: [OSDI02 §4]; [KB1021095] (large pages), [KB2097593] (salting); the
keys in brackets resolve in ``docs/references.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numba import njit

from hvmem.hardware.frames import MachineMemory
from hvmem.hardware.prefetch import host_prefetch
from hvmem.hypervisor.large_pages import break_covering, hashed_pages
from hvmem.hypervisor.pmap import Backing
from hvmem.hypervisor.reclaim.sharing_table import (
    KIND_HINT,
    KIND_SHARED,
    SharingTable,
    _find,
    _hint_holds,
    entry_frame,
    entry_word,
    table_key,
)
from hvmem.hypervisor.vm_state import LARGE_PAGE_SHIFT, VmState
from hvmem.units import ns_to_s

SALTING_MODES = ("across", "within", "explicit")
SHARE_SCAN_TIME_S = 3600  # Mem.ShareScanTime: scan a whole VM per 60 minutes [VS4-ATTR]
SHARE_RATE_MAX_PAGES_PER_S = 1024  # Mem.ShareRateMax, per VM [VS4-ATTR][LAMW]
SHARE_SCAN_VM_PAGES_PER_S = 50  # ESX 2.5 ShareScanVM, per VM [ESX25-p343]
SHARE_SCAN_TOTAL_PAGES_PER_S = 200  # ESX 2.5 ShareScanTotal, per host [ESX25-p343]
SHARE_SCAN_MIB_S_PER_GHZ = 4  # Mem.ShareScanGHz: MB/s per GHz of host CPU [VS4-ATTR][LAMW]

SHARED_OWNER = -4  # frames.owner of a shared frame: it belongs to no single VM

# Outcome per candidate, from the kernel.
A_HINT = 0  # inserted as a hint
A_SHARE = 1  # mapped to an existing shared frame (``target``)
A_PROMOTE = 2  # the hinted frame (``target``) became shared; both pages map to it
A_ALREADY = 3  # the page is shared already
A_STALE = 4  # a stale hint was dropped; this page took its place as a hint
A_FALSE = 5  # hash matched, content did not: ineligible
A_NOT_BACKED = 6  # no private frame to share
A_PAGE_TABLE = 7  # a guest page-table page: not a candidate
N_ACTIONS = 8  # the kernel's counts array has one more slot (spare, always 0)
PREFETCH = 16  # candidates ahead whose table slot is prefetched (see the module docstring)
PREFETCH_FRAME = 8  # candidates ahead whose slot's frame is prefetched



@njit(cache=True)
def scan_kernel(ppns, pmap_state, pmap_mpn, is_table, salt, content, owner, frame_ppn,
                refcount, table, t_used, shift, keys, mpns, action, joined, old,
                promoted_vm, promoted_ppn, counts):
    """Offer ``ppns`` of one VM to the table; returns how many hints were promoted.

    Two passes: the first gathers each candidate's frame and key into ``mpns``
    and ``keys`` (sequential when ``ppns`` ascend), the second probes the
    table, one cache line a probe, prefetched PREFETCH candidates ahead.
    Frames promoted to shared get owner SHARED_OWNER and their refcount raised
    here, and this VM's pages that now map a shared frame are remapped in its
    pmap (state SHARED); they are listed in ``joined`` (in ``ppns`` order) with
    the frames they held in ``old``, ``counts[A_SHARE] + counts[A_PROMOTE]`` of
    them. The rest is the caller's: the promoted pages' pmap state, the
    translations of both, and freeing ``old``.
    """
    n = ppns.size
    for i in range(n):
        p = ppns[i]
        mpns[i] = -1
        st = pmap_state[p]
        if is_table[p]:
            action[i] = A_PAGE_TABLE
            continue
        if st != 1 and st != 2:  # Backing.PRIVATE, Backing.SHARED
            action[i] = A_NOT_BACKED
            continue
        m = pmap_mpn[p]
        if owner[m] == SHARED_OWNER:
            action[i] = A_ALREADY
            continue
        mpns[i] = m
        keys[i] = table_key(content[m], salt)
    n_promoted = 0
    n_joined = 0
    # Prefetch the slot PREFETCH candidates ahead so its cache miss overlaps the
    # probes before it: a prefetch instruction, unlike a load, retires at once,
    # so a mispredicted branch on a probe's outcome does not wait for it.
    for i in range(n):
        ahead = i + PREFETCH
        if ahead < n and mpns[ahead] >= 0:
            home = np.int64(keys[ahead] >> np.uint64(shift))
            host_prefetch(table, home)
            # A probe that runs past its home slot may cross into the next
            # line: fetch the line of the third slot on as well (often the
            # same line, at no cost). Past the array's end a prefetch is harmless.
            host_prefetch(table, home + 3)
        # Nearer, the slot is likely in cache: read its frame and prefetch that
        # frame's words, which a shared or hinted entry's check reads. Only
        # the home slot is looked at, and frame 0 stands in when it holds
        # another key, so no branch here depends on the load.
        ahead = i + PREFETCH_FRAME
        if ahead < n and mpns[ahead] >= 0:
            home = np.int64(keys[ahead] >> np.uint64(shift))
            f = entry_frame(table[home].val)
            f = f if table[home].key == keys[ahead] else 0
            host_prefetch(content, f)
            host_prefetch(owner, f)
            host_prefetch(frame_ppn, f)
            host_prefetch(refcount, f)
        mpn = mpns[i]
        if mpn < 0:
            continue
        if owner[mpn] == SHARED_OWNER:  # promoted earlier in this batch
            action[i] = A_ALREADY
            continue
        key = keys[i]
        token = content[mpn]
        slot = _find(table, key, shift)
        if slot < 0:
            slot = -slot - 1
            table[slot].key = key
            table[slot].val = entry_word(mpn, KIND_HINT)
            t_used[0] += 1
            action[i] = A_HINT
            continue
        entry = np.uint64(table[slot].val)
        frame = entry_frame(entry)
        if entry & KIND_SHARED:
            if content[frame] != token:
                action[i] = A_FALSE
                continue
            refcount[frame] += 1
            action[i] = A_SHARE
            joined[n_joined] = ppns[i]
            old[n_joined] = mpn
            n_joined += 1
            pmap_mpn[ppns[i]] = frame
            pmap_state[ppns[i]] = 2  # Backing.SHARED
            continue
        # A hint: still the same private page with the same content?
        if frame == mpn or not _hint_holds(frame, key, salt, content, owner, frame_ppn,
                                           refcount):
            table[slot].val = entry_word(mpn, KIND_HINT)  # replace the stale hint
            action[i] = A_STALE
            continue
        if content[frame] != token:
            action[i] = A_FALSE
            continue
        promoted_vm[n_promoted] = owner[frame]
        promoted_ppn[n_promoted] = frame_ppn[frame]
        n_promoted += 1
        owner[frame] = SHARED_OWNER
        frame_ppn[frame] = -1
        refcount[frame] = 2
        table[slot].val = entry_word(frame, KIND_SHARED)
        action[i] = A_PROMOTE
        joined[n_joined] = ppns[i]
        old[n_joined] = mpn
        n_joined += 1
        pmap_mpn[ppns[i]] = frame
        pmap_state[ppns[i]] = 2  # Backing.SHARED
    for i in range(n):
        counts[action[i]] += 1
    return n_promoted


def profile_scan_rates(profile: str, per_vm_pages_per_s: float | None,
                       total_pages_per_s: float | None, cpu_ghz: float
                       ) -> tuple[float | None, float]:
    """(per-VM rate, host cap) with what is None taken from ``profile``'s defaults.

    esx4: ShareScanVM 50 and ShareScanTotal 200 pages/s [ESX25-p343]; esxi5, esxi6:
    the per-VM rate stays None (a whole VM per ShareScanTime, at most ShareRateMax,
    :func:`default_scan_rate_pages_per_s`), the cap is ShareScanGHz times
    ``cpu_ghz`` [VS4-ATTR][LAMW].
    """
    if profile == "esx4":
        per_vm = SHARE_SCAN_VM_PAGES_PER_S if per_vm_pages_per_s is None else per_vm_pages_per_s
        total = SHARE_SCAN_TOTAL_PAGES_PER_S if total_pages_per_s is None else total_pages_per_s
        return float(per_vm), float(total)
    if total_pages_per_s is None:
        total_pages_per_s = SHARE_SCAN_MIB_S_PER_GHZ * 256 * cpu_ghz  # 256 pages a MiB
    return per_vm_pages_per_s, float(total_pages_per_s)


def default_scan_rate_pages_per_s(n_ppns: int) -> float:
    """Pages per second that scan a VM once per ShareScanTime, capped at ShareRateMax."""
    return min(SHARE_RATE_MAX_PAGES_PER_S, n_ppns / SHARE_SCAN_TIME_S)


# -- the scan driver ---------------------------------------------------------------


def scan_vms(vms: Sequence[VmState], elapsed_ns: int, rng: np.random.Generator,
             rate_pages_per_s: float | None = None,
             total_pages_per_s: float | None = None) -> int:
    """Run the page-sharing scanner for ``elapsed_ns``: random pages of every VM.

    Each VM is scanned at ``rate_pages_per_s`` (by default a whole VM per
    Mem.ShareScanTime, capped at Mem.ShareRateMax), all of them scaled down alike
    when they add up to more than ``total_pages_per_s`` (None: no host cap).
    Returns frames freed.
    """
    rates = [rate_pages_per_s or default_scan_rate_pages_per_s(vm.n_ppns) for vm in vms]
    total = sum(rates)
    scale = 1.0
    if total_pages_per_s is not None and total > total_pages_per_s:
        scale = total_pages_per_s / total
    freed = 0
    for vm, rate in zip(vms, rates, strict=True):
        n = min(vm.n_ppns, int(ns_to_s(rate * scale * elapsed_ns) + rng.random()))
        if n:
            freed += vm.services.share(vm, np.sort(rng.choice(vm.n_ppns, n, replace=False)))
    return freed


def share_scan(vm: VmState, ppns: np.ndarray, table: SharingTable, salt: int,
               salts: Callable[[], np.ndarray], vms: Sequence[VmState]) -> int:
    """Offer ``ppns`` (distinct) of ``vm`` to the table; returns frames freed.

    ``salt`` is this VM's, ``salts()`` every VM's and ``vms`` every VM by id
    (a promoted hint's page may be any VM's). Guest page-table pages are not
    candidates: the model keeps their entries in the table store rather than
    as a content token. Pages of a large page are hashed but not shared
    (counted as ``large_pages``), unless the host breaks large pages by memory
    state: then a visited large page is broken and its hashed pages are
    offered with the rest [KB1021095][YB-STATES6].
    """
    ppns = np.asarray(ppns, dtype=np.int64)
    frames = vm.frames
    if ppns.size and vm.large.any():
        in_large = vm.large[ppns >> LARGE_PAGE_SHIFT]
        if np.any(in_large):
            if vm.services.large_page_breaking != "off":
                broken = break_covering(vm, ppns[in_large], "state", bounded=True)
                ppns = np.union1d(ppns, hashed_pages(vm, broken))
                in_large = vm.large[ppns >> LARGE_PAGE_SHIFT]  # left whole: skipped
            if np.any(in_large):
                vm.lp_hashed[ppns[in_large]] = True
                skipped = int(np.count_nonzero(in_large))
                table.counters.scanned += skipped
                table.counters.large_pages += skipped
                ppns = ppns[~in_large]
    n = ppns.size
    table.reserve(n, frames, salts)
    keys, mpns, action, joined, old, promoted_vm, promoted_ppn = table.scratch(n)
    counts = np.zeros(N_ACTIONS + 1, dtype=np.int64)
    n_promoted = scan_kernel(
        ppns, vm.pmap.state, vm.pmap.mpn, vm.guest_tables.is_table_frame, salt,
        frames.content, frames.owner, frames.ppn, frames.refcount, table.table, table.t_used,
        table.shift, keys, mpns, action, joined, old, promoted_vm, promoted_ppn, counts)
    c = table.counters
    c.scanned += n
    c.hints_inserted += int(counts[A_HINT])
    c.stale_hints += int(counts[A_STALE])
    c.already_shared += int(counts[A_ALREADY])
    c.page_tables += int(counts[A_PAGE_TABLE])
    c.not_backed += int(counts[A_NOT_BACKED])
    c.false_matches += int(counts[A_FALSE])
    c.hint_promotions += int(n_promoted)
    # Pages whose hinted twin became a shared frame: read-only from now on.
    if n_promoted:
        promoted_vm, promoted_ppn = promoted_vm[:n_promoted], promoted_ppn[:n_promoted]
        first = int(promoted_vm[0])
        vm_ids = ([first] if np.all(promoted_vm == first)
                  else np.unique(promoted_vm).tolist())
        for vm_id in vm_ids:
            owner_vm = vms[vm_id]
            pages = promoted_ppn if len(vm_ids) == 1 else promoted_ppn[promoted_vm == vm_id]
            pages = pages.copy()  # the scratch arrays are reused by the next scan
            # A hint made before its frame became part of a large page can still
            # match: that large page is broken first, as its page now shares.
            break_covering(owner_vm, pages, "other")
            owner_vm.pmap.set_state(pages, Backing.SHARED)
            owner_vm.paging.on_backing_changed(pages, True)
    # This VM's pages that now map a shared frame (the kernel remapped them
    # in the pmap) give their own frame back.
    n_joined = int(counts[A_SHARE] + counts[A_PROMOTE])
    if n_joined == 0:
        return 0
    vm.pmap.moved(n_joined, Backing.PRIVATE, Backing.SHARED)  # the kernel's remapping
    # Used before any other scan can reuse the work arrays: no copies.
    sharers, old = joined[:n_joined], old[:n_joined]
    vm.paging.on_backing_changed(sharers, True)
    frames.free(old)
    c.shared += n_joined + int(n_promoted)
    c.frames_freed += n_joined
    return n_joined


def unshare(vm: VmState, ppns: np.ndarray, state: Backing) -> None:
    """Drop shared mappings of ``ppns`` without copying (their data is not needed)."""
    shared_mpns = vm.pmap.unback(ppns, state)
    vm.paging.on_backing_changed(ppns, True)
    vm.services.leave_shared(vm, shared_mpns, False)


def leave_shared(table: SharingTable, frames: MachineMemory, salt: int,
                 shared_mpns: np.ndarray, copied: bool) -> None:
    """One sharer (salted ``salt``) fewer per entry; frames left with none go back.

    ``copied``: the sharers left by a write, each with a private copy
    (counted as ``cow_breaks``).
    """
    if copied:
        table.counters.cow_breaks += int(shared_mpns.size)
    np.subtract.at(frames.refcount, shared_mpns, 1)
    empty = np.unique(shared_mpns[frames.refcount[shared_mpns] == 0])
    for mpn in empty.tolist():
        table.forget(int(frames.content[mpn]), salt, mpn)
    if empty.size:
        frames.refcount[empty] = 1  # free() expects a held frame
        frames.free(empty)
