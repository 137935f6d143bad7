"""The aggregate model's array layout: which slot of each array holds what.

``kernel.py`` steps arrays of floats indexed by these constants: the masses
``m[h, v, c, s]`` by backing state ``s``, the per-VM parameters and state
``vm[h, v, V_*]``, the counters ``cnt[h, v, K_*]``, the tick's stall by cause
``stall[h, v, S_*]``, the per-host parameters and state ``host[h, H_*]`` and the
costs ``costs[C_*]``. ``model.py`` fills them, ``rows.py`` and ``backend.py`` read
them, and the fleet's policy (``fleet_policy.py``) writes its plans into them.
"""

from __future__ import annotations

from hvmem.aggregate.classes import FIRST_TOUCH_BINS as FT_BINS

# vmw_balloon's allocation rates and slow cycles: page fidelity's driver's own.
from hvmem.guest.balloon_driver import (  # noqa: F401 (in __all__)
    NOSLEEP_ALLOC_MAX_PAGES,
    RATE_ALLOC_INC_PAGES,
    RATE_ALLOC_MAX_PAGES,
    RATE_ALLOC_MIN_PAGES,
    RATE_FREE_MAX_PAGES,
    SLOW_CYCLES,
)

# A large page's 4 KiB pages, and the free frames a split leaves: page fidelity's own.
from hvmem.hypervisor.large_pages import LARGE_PAGE_SPLIT_RESERVE  # noqa: F401 (in __all__)
from hvmem.hypervisor.vm_state import LARGE_PAGE_PAGES  # noqa: F401 (in __all__)

# A class's sub-blocks (aggregate/classes.py), FT_BINS of them (ft[h, v, c, k]):
# their touch chances, their shares of the pages still never touched, their page
# shares and their shares touched this sampling period; then the LRU age of the
# class's last swapped-out split and each sub-block's log(1 - chance), worked out
# once a phase (0: not yet) (guest_paging.lru_split). A constant, so that the
# kernels' loops over the sub-blocks have a trip count known when they compile.
FT_PROB, FT_NEVER, FT_PAGES, FT_SEEN = 0, FT_BINS, 2 * FT_BINS, 3 * FT_BINS
FT_AGE = 4 * FT_BINS
FT_LOG = 4 * FT_BINS + 1
N_FT = 5 * FT_BINS + 1

# Backing states of a mass. FILL: private, and zeroes since the guest faulted it in
# by a read (demand-zero), until its first write.
NEVER, PRIV, SHR, ZERO, ZIP, SWP, GSWP, BALL, FILL = range(9)
N_STATES = 9
FREE_ROW, BALLOON_ROW, FIRST_CLASS = 0, 1, 2
# The guest kernel's pages the host swapped: the balloon's row, in the SWP state (its
# pages are BALL), as both are pinned guest pages the workload never touches.
KERNEL_ROW = BALLOON_ROW

# Per-VM parameters and state (vm[h, v, k]).
(V_ON, V_PAGES, V_KERNEL, V_LOW, V_HIGH, V_GSWAP_CAP, V_GSWAP_NS, V_SCAN_RATE, V_SCAN_LEN,
 V_SCAN_POS, V_BAL_TARGET, V_BAL_MAX, V_BAL_ON, V_SWAP_TARGET, V_COMPRESS, V_BLOCKED,
 V_SHARE_IMAGE, V_COMP_FRAC, V_FRAME_FRAC, V_CACHE_MAX, V_CACHE_FRAMES, V_SHARE_RATE,
 V_IMAGE_GROUP, V_PLANNED, V_SAMPLE_LEFT, V_SLOW, V_FAST, V_LAST_FRAC, V_RUNNING,
 V_RETURNED_SEEN, V_SAMPLE_N, V_SAVED, V_SHARED, V_ZERO_SHARED, V_ZERO_DOMAIN, V_LARGE_FRAC,
 V_NCLASS, V_SZTGT, V_SWTGT, V_IMAGE_BACKED, V_CAP, V_LP_HASHED, V_MIN, V_BAL_RATE,
 V_BAL_SLOW_LEFT) = range(45)
# The guest's balloon beyond its rates (aggregate/balloon.py): the size at the last poll,
# when it last made progress (ns) and whether the host holds it stuck; deflate-on-OOM
# and free page reporting switched on; backed free pages not yet reported. Guest
# reclaim by random victims instead of LRU's coldest first (guest_paging.py).
(V_BAL_LAST, V_BAL_PROGRESS_NS, V_BAL_STUCK, V_DEFLATE_OOM, V_REPORTING,
 V_REPORT_LEFT, V_GUEST_RANDOM) = range(45, 52)
# The VM's private image pages that are the sharing table's hints: hashed by its
# scanner since their frame last changed, not yet met by another VM's copy
# (aggregate/image_share.py); and its private pages that left private memory since
# the scanner's last pass other than by sharing, which take hints with them.
V_HINTED, V_PRIV_LEFT = 52, 53
# The VM's image pages shared since the last settle by meeting a hint (each makes a
# frame of two sharers with the hinting page) and by joining a shared frame
# (aggregate/image_share.py); and, in the row of image group ``g``, its shared image
# frames at that settle. V_GROUP_FRAMES and the histogram after it hold the group's
# state, not the slot's: they stay the row's last columns, which power_on keeps.
V_NEW_PAIRS, V_JOINED_UP = 54, 55
# The guest pages that held the workload's data when the sampling period began.
V_RESIDENT_START = 56
# The share of the VM's pages offered to the sharing scanner's next pass for large
# pages host reclaim broke: those the scanner had hashed (reclaim.py's _break_for).
V_LP_OFFER = 57
V_GROUP_FRAMES = 58
N_VM = 59
# Image group ``g``'s shared image frames by their sharers at the last settle:
# vm[h, g, V_FRAMES + s] frames shared by ``s`` VMs, ``s`` in 0..VMs (the model
# allocates VMs + 1 columns after N_VM; 0 stays empty).
V_FRAMES = N_VM

# Counters, cumulative (cnt[h, v, k]).
(K_SWAP_IN, K_SWAP_OUT, K_ZIP, K_UNZIP, K_GSWAP_IN, K_GSWAP_OUT, K_RECLAIM_STALL_NS,
 K_BALLOON_MOVED) = range(8)
N_CNT = 8

# The tick's stall by cause (stall[h, v, k]), in results.STALL_CAUSES' order.
(S_GUEST, S_SWAP_IN, S_DECOMPRESS, S_COW, S_ZEROING, S_BLOCKED, S_OTHER) = range(7)
N_STALL = 7

# Per-host parameters and state (host[h, k]); the five states' levels follow.
(H_TOTAL, H_FREE, H_STATE, H_SHARING, H_LARGE_PAGES, H_SALT_ACROSS, H_SWAP_NS, H_REFILL,
 H_WORSENED, H_HIGH_MIB, H_FAST_GAIN, H_SLOW_GAIN, H_FLOOR, H_SAMPLE_TICKS, H_ZIP_ON,
 H_SHARE_ON) = range(16)
H_ENTER = 16  # 5 values: free MiB below which the state below s is entered (-inf: none)
H_EXIT = 21  # 5 values: free MiB above which s is left upward (inf: none)
H_LOWER = 26  # 5 values: the state below s
H_HIGHER = 31  # 5 values: the state above s
H_SWAP_OK = 36  # 5 values: swapping allowed in s
H_ZIP_OK = 41  # 5 values: compression allowed in s
H_LP_ACTIVE = 46  # 5 values: large pages broken actively in s
H_LP_LAZY = 51  # the profile breaks the large pages the scanner visits below HIGH's threshold
H_LP_BREAK = 52  # pages a VM's active breaking splits a tick
N_HOST = 53
LOW_STATE = 4
SHARING_RUN, SHARING_STOP, SHARING_UNMERGE = 0, 1, 2

# Costs (costs[k], ns), each event's as page fidelity charges it (hypervisor/fault.py):
# C_COW and C_DECOMPRESS include the exit that serves the fault (``H_SWAP_NS`` too).
C_GUEST_FAULT, C_HYP_FAULT, C_ZERO_PAGE, C_COW, C_DECOMPRESS, C_BALLOON = range(6)

PAGES_PER_MIB = 256.0
SAMPLE_PAGES = 100

__all__ = [name for name in dir() if name.isupper()]
