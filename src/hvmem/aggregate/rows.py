"""An aggregate run's VM rows: the page-level run's columns, filled by a kernel.

A tick's rows of every running VM are one row each of a float buffer, filled
in one Numba call from the masses and counters (``fill_vm_rows``), and
handed to the result's ``RowLog`` by column every :data:`FLUSH_TICKS` ticks
(each tick when someone watches the run), so a tick of 32 VMs costs a few
microseconds instead of 32 dicts of 40 values. The columns and their order
are ``sim_rows.py``'s, so a results directory reads the same at either
fidelity.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hvmem.aggregate import kernel as k
from hvmem.results import STALL_CAUSES

#: The numeric VM columns after time_s, tick_s and vm, in ``sim_rows.TickRows``' order.
VM_COLUMNS = ("MEMSZ", "GRANT", "SZTGT", "TCHD", "ACTV", "ACTVS", "ACTVF", "ACTVN",
              "MCTLSZ", "MCTLTGT", "MCTLMAX", "SWCUR", "SWTGT", "SWR/s", "SWW/s", "ZIP/s",
              "UNZIP/s", "CACHEUSD", "ZIPPED", "SHRD", "ZERO", "SHRDSVD", "LPAGE",
              "guest_free_mib", "guest_swap_mib", "guest_swap_in_mib_s",
              "guest_swap_out_mib_s", "throughput", "slowdown",
              *(f"stall_{cause}_s" for cause in STALL_CAUSES), "psi_some_frac")
N_COLUMNS = len(VM_COLUMNS)
FLUSH_TICKS = 256


@njit(cache=True, inline="always")
def _frac_mib(frac, pages):
    return np.round(frac * pages) / k.PAGES_PER_MIB


@njit(cache=True)
def fill_vm_rows(m, vm, cnt, last, stall, host, h, idx, tick_ns, out, at):
    """Rows of the VMs ``idx`` of host ``h`` into ``out[at:]``; counters kept in ``last``."""
    mib = 1.0 / k.PAGES_PER_MIB
    tick_s = tick_ns / 1e9
    fast_gain, floor = host[h, k.H_FAST_GAIN], host[h, k.H_FLOOR]
    for i in range(idx.size):
        v = idx[i]
        row = out[at + i]
        nc = int(vm[h, v, k.V_NCLASS])
        by = np.zeros(k.N_STATES)
        free = 0.0
        for c in range(nc):
            for s in range(k.N_STATES):
                by[s] += m[h, v, c, s]
                if c == k.FREE_ROW:
                    free += m[h, v, c, s]
        pages = vm[h, v, k.V_PAGES]
        slow, fast, running = vm[h, v, k.V_SLOW], vm[h, v, k.V_FAST], vm[h, v, k.V_RUNNING]
        current = fast + fast_gain * (running - fast)
        stall_ns = 0.0
        for j in range(k.N_STALL):
            stall_ns += stall[h, v, j]
        lost = 1.0 if stall_ns <= tick_ns else tick_ns / stall_ns
        row[0] = pages * mib
        private = vm[h, v, k.V_KERNEL] + by[k.PRIV] + by[k.FILL]
        row[1] = (private + vm[h, v, k.V_SHARED]) * mib
        row[2] = vm[h, v, k.V_SZTGT]
        row[3] = _frac_mib(max(running, vm[h, v, k.V_LAST_FRAC]), pages)
        row[4] = _frac_mib(max(slow, fast, current, floor), pages)
        row[5] = _frac_mib(slow, pages)
        row[6] = _frac_mib(fast, pages)
        row[7] = _frac_mib(current, pages)
        row[8] = by[k.BALL] * mib
        row[9] = np.floor(vm[h, v, k.V_BAL_TARGET]) * mib
        row[10] = vm[h, v, k.V_BAL_MAX] * mib
        row[11] = by[k.SWP] * mib
        row[12] = vm[h, v, k.V_SWTGT]
        row[13] = (cnt[h, v, k.K_SWAP_IN] - last[v, k.K_SWAP_IN]) * mib / tick_s
        row[14] = (cnt[h, v, k.K_SWAP_OUT] - last[v, k.K_SWAP_OUT]) * mib / tick_s
        row[15] = (cnt[h, v, k.K_ZIP] - last[v, k.K_ZIP]) * mib / tick_s
        row[16] = (cnt[h, v, k.K_UNZIP] - last[v, k.K_UNZIP]) * mib / tick_s
        row[17] = vm[h, v, k.V_CACHE_FRAMES] * mib
        row[18] = by[k.ZIP] * mib
        row[19] = vm[h, v, k.V_SHARED] * mib
        row[20] = vm[h, v, k.V_ZERO_SHARED] * mib
        row[21] = vm[h, v, k.V_SAVED] * mib
        # Guest pages in live host large pages: the VM's large-page share of its
        # private pages (a large page is never shared), in whole 2 MiB pages.
        row[22] = (np.floor(vm[h, v, k.V_LARGE_FRAC] * private / k.LARGE_PAGE_PAGES)
                   * k.LARGE_PAGE_PAGES * mib)
        row[23] = free * mib
        row[24] = by[k.GSWP] * mib
        row[25] = (cnt[h, v, k.K_GSWAP_IN] - last[v, k.K_GSWAP_IN]) * mib / tick_s
        row[26] = (cnt[h, v, k.K_GSWAP_OUT] - last[v, k.K_GSWAP_OUT]) * mib / tick_s
        row[27] = max(0.0, 1.0 - stall_ns / tick_ns)
        row[28] = (tick_ns + stall_ns) / tick_ns
        for j in range(k.N_STALL):
            row[29 + j] = stall[h, v, j] / 1e9 * lost
        row[29 + k.N_STALL] = min(1.0, (cnt[h, v, k.K_RECLAIM_STALL_NS]
                                        - last[v, k.K_RECLAIM_STALL_NS]) / tick_ns)
        for j in range(k.N_CNT):
            last[v, j] = cnt[h, v, j]


class VmRowBuffer:
    """VM rows kept as a float buffer between flushes into a ``RowLog``."""

    def __init__(self, n_vms: int) -> None:
        self.out = np.zeros((FLUSH_TICKS * max(1, n_vms), N_COLUMNS))
        self.times: list[float] = []
        self.tick_s: list[float] = []
        self.names: list[str] = []
        self.n = 0

    def room(self, n: int) -> bool:
        """Whether ``n`` more rows fit."""
        return self.n + n <= self.out.shape[0]

    def flush(self, log) -> None:
        """Hand the buffered rows to ``log`` by column, in the page-level run's order."""
        if not self.n:
            return
        cols = {"time_s": self.times, "tick_s": self.tick_s, "vm": self.names}
        block = self.out[:self.n]
        for j, name in enumerate(VM_COLUMNS):
            cols[name] = np.ascontiguousarray(block[:, j])
        log.append_columns(cols, self.n)
        self.times, self.tick_s, self.names = [], [], []
        self.n = 0
