"""The data of a VM's pages put aside: swapped to its swap file or held compressed.

What is modelled
----------------
A page the hypervisor reclaims keeps its data somewhere: in the VM's swap
file, or in its compression cache (``swap.py``, ``compression.py``); a page is
in one or the other, never both, and a touch brings it back. What the model
keeps of that data is the page's content token, and for a compressed page
its slot size and when it was stored (the cache evicts its oldest first).

Data layout: the pages put aside at any time are a small part of the VM's
memory, but which pages they are is spread over all of it (the host picks
them at random). Arrays of a token (8 bytes), a slot size and a store time
per guest page were written, a page of each array at a time, wherever a page
was ever put aside: on bench-32vm 15 bytes a guest page, 300 MiB after 10
minutes. Here each page put aside takes a *slot* of compact arrays (its
token, its PPN, its size code, its store time), handed out from a free list
and given back when the page comes back; per guest page there is only the
slot's number (``slot_of``, int32, 0 for none), so a page's data is found in
two reads and the pages of each kind are counted as they come and go.

Taking pages back (a swap-in, a decompression, a discard) is one pass over
the pages (:func:`_take_kernel`): each page's slot is read, its token
gathered, the slot freed and counted by kind, with no temporaries the size
of the request; the slots go on the free stack in request order.

Invariants: ``slot_of[ppn] = s + 1`` exactly where slot ``s`` holds ``ppn``
(``ppn_of[s] == ppn``); a free slot holds PPN -1; ``n_swapped`` and
``n_compressed`` count the slots of each kind.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.errors import InvariantViolation

#: The size code of a page in the swap file (a compressed page's is its slot in KiB).
SWAP_FILE = 0
_FIRST_SLOTS = 1024
#: Which put-aside pages a take frees (:meth:`AsideStore.take_kind`).
TAKE_ANY, TAKE_SWAPPED, TAKE_COMPRESSED = 0, 1, 2
_NO_TOKENS = np.zeros(0, dtype=np.uint64)


@njit(cache=True, nogil=True)
def _take_kernel(slot_of, token, ppn_of, kib, free, n_free, ppns, which, tokens_out):
    """Free the slots of the distinct ``ppns`` put aside as ``which`` says, in order.

    Each freed page's token goes to ``tokens_out[i]`` (if it has room; the
    caller zeroed it) and its slot onto ``free`` above ``n_free``. Returns
    (the new ``n_free``, swap-file pages freed, compressed pages freed, the
    compressed pages' KiB).
    """
    store = tokens_out.size > 0
    swapped = 0
    compressed = 0
    compressed_kib = 0
    for i in range(ppns.size):
        p = ppns[i]
        s = np.int64(slot_of[p]) - 1
        if s < 0:
            continue
        k = kib[s]
        if k == SWAP_FILE:
            if which == TAKE_COMPRESSED:
                continue
            swapped += 1
        else:
            if which == TAKE_SWAPPED:
                continue
            compressed += 1
            compressed_kib += k
        if store:
            tokens_out[i] = token[s]
        slot_of[p] = 0
        ppn_of[s] = -1
        free[n_free] = s
        n_free += 1
    return n_free, swapped, compressed, compressed_kib


class AsideStore:
    """The put-aside pages of one VM, in compact slots (see the module essay).

    Args:
        n_ppns: the VM's configured memory in pages (below 2**31).
    """

    __slots__ = ("slot_of", "token", "ppn_of", "kib", "stored_at", "_free", "_n_free",
                 "n_slots", "n_swapped", "n_compressed")

    def __init__(self, n_ppns: int):
        # Slot number + 1 by PPN, 0 for a page not put aside: np.zeros commits a
        # page of it only once a page it covers is put aside.
        self.slot_of = np.zeros(n_ppns, dtype=np.int32)
        self.token = np.zeros(_FIRST_SLOTS, dtype=np.uint64)
        self.ppn_of = np.full(_FIRST_SLOTS, -1, dtype=np.int32)
        self.kib = np.zeros(_FIRST_SLOTS, dtype=np.uint8)  # SWAP_FILE, or 1 or 2 KiB
        self.stored_at = np.zeros(_FIRST_SLOTS, dtype=np.int64)  # compressed pages' order
        self._free = np.zeros(_FIRST_SLOTS, dtype=np.int32)  # freed slots, a stack
        self._n_free = 0
        self.n_slots = 0  # slots ever handed out: the arrays' used length
        self.n_swapped = 0
        self.n_compressed = 0

    def _grow(self, need: int) -> None:
        size = self.token.size
        while size < need:
            size *= 2
        for name, fill in (("token", 0), ("ppn_of", -1), ("kib", 0), ("stored_at", 0),
                           ("_free", 0)):
            old = getattr(self, name)
            new = np.full(size, fill, dtype=old.dtype)
            new[: old.size] = old
            setattr(self, name, new)

    def put(self, ppns: np.ndarray, tokens: np.ndarray, kib: np.ndarray | int = SWAP_FILE,
            stored_at: np.ndarray | None = None) -> None:
        """Put the distinct ``ppns`` (none put aside now) aside with their ``tokens``.

        ``kib`` is SWAP_FILE for the swap file, else each page's slot in KiB;
        ``stored_at`` orders compressed pages.
        """
        n = ppns.size
        if n == 0:
            return
        if np.any(self.slot_of[ppns]):
            raise InvariantViolation("a page put aside twice")
        reuse = min(n, self._n_free)
        fresh = n - reuse
        if self.n_slots + fresh > self.token.size:
            self._grow(self.n_slots + fresh)
        slots = np.empty(n, dtype=np.int64)
        slots[:reuse] = self._free[self._n_free - reuse : self._n_free]
        self._n_free -= reuse
        slots[reuse:] = np.arange(self.n_slots, self.n_slots + fresh)
        self.n_slots += fresh
        self.slot_of[ppns] = slots + 1
        self.ppn_of[slots] = ppns
        self.token[slots] = tokens
        self.kib[slots] = kib
        if stored_at is not None:
            self.stored_at[slots] = stored_at
        if np.isscalar(kib) and kib == SWAP_FILE:
            self.n_swapped += n
        else:
            swapped = int(np.count_nonzero(self.kib[slots] == SWAP_FILE))
            self.n_swapped += swapped
            self.n_compressed += n - swapped

    def take(self, ppns: np.ndarray) -> np.ndarray:
        """Take the distinct ``ppns`` back; returns their tokens (0 for a page not put aside)."""
        return self.take_kind(ppns, TAKE_ANY)[0]

    def take_kind(self, ppns: np.ndarray, which: int, tokens: bool = True
                  ) -> tuple[np.ndarray, int]:
        """Take back those of the distinct ``ppns`` put aside as ``which`` says.

        ``which``: TAKE_ANY, TAKE_SWAPPED (the swap file's) or TAKE_COMPRESSED.
        Returns their tokens (0 for a page not taken; none if not ``tokens``)
        and the KiB the compressed ones taken held.
        """
        ppns = np.ascontiguousarray(ppns, dtype=np.int64)
        out = np.zeros(ppns.size, dtype=np.uint64) if tokens else _NO_TOKENS
        self._n_free, swapped, compressed, compressed_kib = _take_kernel(
            self.slot_of, self.token, self.ppn_of, self.kib, self._free, self._n_free,
            ppns, which, out)
        self.n_swapped -= int(swapped)
        self.n_compressed -= int(compressed)
        return out, int(compressed_kib)

    def pages(self, swap_file: bool) -> np.ndarray:
        """The PPNs in the swap file (``swap_file``) or the compression cache, ascending."""
        live = self.ppn_of[: self.n_slots]
        kind = self.kib[: self.n_slots]
        held = (live >= 0) & ((kind == SWAP_FILE) if swap_file else (kind != SWAP_FILE))
        return np.sort(live[held].astype(np.int64))

    def check_invariants(self) -> None:
        """Raise :class:`InvariantViolation` unless slots, PPNs and counts agree."""
        live = np.flatnonzero(self.ppn_of[: self.n_slots] >= 0)
        ppns = self.ppn_of[live].astype(np.int64)
        if not np.array_equal(self.slot_of[ppns].astype(np.int64), live + 1) or (
                np.count_nonzero(self.slot_of) != live.size):
            raise InvariantViolation("put-aside pages: slots and pages disagree")
        swapped = int(np.count_nonzero(self.kib[live] == SWAP_FILE))
        if (swapped, live.size - swapped) != (self.n_swapped, self.n_compressed):
            raise InvariantViolation("put-aside pages: kept counts are off")
