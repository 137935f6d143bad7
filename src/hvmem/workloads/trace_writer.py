"""Writing memory-reference traces: Lackey records from arrays, and a seeded synthetic trace.

The tests and ``hvmem bench guest`` need Lackey traces of known content and any
length without running Valgrind. :func:`write_lackey` formats references as
Lackey records in a Numba kernel (a block of a million records at a time);
:func:`generate_lackey` writes a seeded trace that looks like a small
program's: instruction fetches walking a code region and jumping to popular
targets, loads and stores to a stack, a heap of popular objects and a data
segment. What the readers accept: :mod:`hvmem.workloads.trace`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from hvmem.errors import ConfigError
from hvmem.workloads.trace_parse import K_INSTR, format_lackey

__all__ = ["generate_lackey", "write_lackey"]


def _kind_codes(kinds: str | Sequence[str] | np.ndarray, n: int) -> np.ndarray:
    if isinstance(kinds, str):
        codes = np.frombuffer(kinds.encode("ascii"), dtype=np.uint8)
    else:
        arr = np.asarray(kinds)
        codes = arr.astype("S1").view(np.uint8) if arr.dtype.kind in "US" else arr.astype(np.uint8)
    if codes.shape[0] != n:
        raise ConfigError(f"got {codes.shape[0]} kinds for {n} addresses")
    if not np.isin(codes, np.frombuffer(b"ILSM", np.uint8)).all():
        raise ConfigError("Lackey kinds must be among 'I', 'L', 'S' and 'M'")
    return codes


def write_lackey(
    path: str | os.PathLike[str],
    addresses: np.ndarray | Sequence[int],
    kinds: str | Sequence[str] | np.ndarray,
    sizes: np.ndarray | Sequence[int] | int = 8,
    *,
    header: Sequence[str] = (),
    append: bool = False,
) -> None:
    """Write references as Lackey records, formatted by a Numba kernel.

    Args:
        path: the file to write.
        addresses: byte addresses (unsigned 64-bit).
        kinds: one of ``I``/``L``/``S``/``M`` per address, as a string such as
            ``"ILSM"``, a sequence of one-letter strings or an array of ASCII codes.
        sizes: access sizes in bytes, one per address or one for all.
        header: lines written before the records (e.g. Valgrind ``==`` lines).
        append: append to ``path`` instead of replacing it.

    Raises:
        ConfigError: lengths differ or a kind is not a Lackey kind.
    """
    addrs = np.asarray(addresses, dtype=np.uint64).reshape(-1)
    n = addrs.shape[0]
    codes = _kind_codes(kinds, n)
    size_arr = np.broadcast_to(np.asarray(sizes, dtype=np.int64), (n,)).copy()
    if (size_arr < 0).any():
        raise ConfigError("Lackey access sizes must not be negative")
    with open(path, "ab" if append else "wb") as out:
        for line in header:
            out.write(line.encode("utf-8") + b"\n")
        step = 1 << 20
        buf = np.empty(step * 44, dtype=np.uint8)  # 3 + 16 + 1 + 20 + 1 bytes at most
        for lo in range(0, n, step):
            hi = min(n, lo + step)
            used = format_lackey(addrs[lo:hi], codes[lo:hi], size_arr[lo:hi], buf)
            out.write(buf[:used].tobytes())


def _zipf_weights(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return w / w.sum()


def generate_lackey(path: str | os.PathLike[str], n_lines: int, seed: int) -> None:
    """Write a seeded, realistic-looking Lackey trace of ``n_lines`` records.

    The mix is about 62% ``I``, 24% ``L``, 10% ``S`` and 4% ``M``. Instruction fetches
    walk sequentially through a 2 MiB code region with 1-8 byte instructions and jump
    to Zipf-popular targets. Data accesses (1, 2, 4 or 8 bytes, aligned) go to a stack
    near ``0x1ffefff000``, a 16 MiB heap of Zipf-popular 64-byte objects, and a 256 KiB
    data segment. A three-line Valgrind header and a one-line footer are added, so the
    file has ``n_lines + 4`` lines. The same ``n_lines`` and ``seed`` give the same file.

    Args:
        path: the file to write.
        n_lines: number of records.
        seed: seed of the random generator.
    """
    if n_lines < 0:
        raise ConfigError(f"n_lines must not be negative, got {n_lines}")
    rng = np.random.default_rng(seed)
    code_base, code_span = 0x0400_0000, 2 << 20
    data_base, data_span = 0x0460_0000, 256 << 10
    heap_base, heap_span = 0x0480_0000, 16 << 20
    stack_top = 0x1F_FEFF_F000
    entries = code_base + rng.integers(0, code_span, 512)
    entry_p = _zipf_weights(entries.shape[0], 1.1)
    objects = heap_base + 64 * rng.permutation(heap_span // 64)[:8192]
    object_p = _zipf_weights(objects.shape[0], 0.9)
    header = [
        "==4242== Lackey, an example Valgrind tool",
        "==4242== Copyright (C) 2002-2017, and GNU GPL'd, by Nicholas Nethercote.",
        "==4242== Command: ./hvmem-synthetic",
    ]
    step = 1 << 20
    first = True
    for lo in range(0, n_lines, step):
        m = min(step, n_lines - lo)
        kinds = rng.choice(np.frombuffer(b"ILSM", np.uint8), m, p=[0.62, 0.24, 0.10, 0.04])
        addrs = np.empty(m, dtype=np.uint64)
        sizes = np.empty(m, dtype=np.int64)
        is_instr = kinds == K_INSTR
        n_i = int(is_instr.sum())
        if n_i:
            isz = rng.integers(1, 9, n_i)
            jump = rng.random(n_i) < 0.08
            jump[0] = True
            seg_starts = np.flatnonzero(jump)
            seg = np.cumsum(jump) - 1
            before = np.cumsum(isz) - isz
            offset = before - before[seg_starts][seg]
            targets = rng.choice(entries, seg_starts.shape[0], p=entry_p)
            pc = code_base + (targets[seg] - code_base + offset) % code_span
            addrs[is_instr] = pc.astype(np.uint64)
            sizes[is_instr] = isz
        n_d = m - n_i
        if n_d:
            dsz = rng.choice(np.array([1, 2, 4, 8]), n_d, p=[0.1, 0.1, 0.3, 0.5])
            region = rng.choice(3, n_d, p=[0.45, 0.35, 0.20])
            stack = stack_top - np.minimum(rng.geometric(1 / 512, n_d), 64 << 10)
            heap = rng.choice(objects, n_d, p=object_p) + rng.integers(0, 64, n_d)
            data = data_base + rng.integers(0, data_span, n_d)
            da = np.where(region == 0, stack, np.where(region == 1, heap, data))
            da &= ~(dsz - 1)
            addrs[~is_instr] = da.astype(np.uint64)
            sizes[~is_instr] = dsz
        write_lackey(path, addrs, kinds, sizes, header=header if first else (), append=not first)
        first = False
    footer = ["==4242== Counted 1 call to main()"]
    with open(path, "w" if first else "a", encoding="ascii") as out:
        if first:
            out.write("\n".join(header) + "\n")
        out.write("\n".join(footer) + "\n")
