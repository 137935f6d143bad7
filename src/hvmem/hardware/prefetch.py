"""The host CPU's prefetch instruction, for Numba kernels.

The simulator's arrays (page tables, stamps, frame tables) are far larger than
the host's caches, and a batch kernel knows the addresses it will load a few
iterations ahead. Asking for them early lets the cache misses overlap instead
of each stalling the loop in turn. A prefetch changes no value: it only moves
data into the caches.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def host_prefetch(typingctx, arr, index):
    """Ask the host CPU to bring ``arr[index]`` into its caches (1-D arrays; no effect on values).

    A prefetch instruction never faults, whatever the address, and nothing
    waits for it: it only lets a later load of the line hit.
    """
    if not isinstance(arr, types.Array) or arr.ndim != 1 or not isinstance(index, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        aryty, idxty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        idx = context.cast(builder, args[1], idxty, types.uintp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [idx], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = builder.module.declare_intrinsic("llvm.prefetch", [i8p], fnty)
        # Arguments: a read, keep in all cache levels (locality 3), data cache.
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, index), codegen
