"""A fleet task's rows: every simulated minute as arrays, streamed to Parquet.

A thousand hosts of 32 VMs over a day are 46 million VM rows, too many to
keep: a task fills a buffer of minutes (one ``[hosts, VMs, column]`` slab per
minute, read off the masses in a few NumPy operations over all its hosts),
and writes it as a Parquet row group whenever it holds about a million rows,
and at the end. Its files are ``vm_rows/part-<first seed>.parquet`` and
``host_rows/part-<first seed>.parquet`` under the output directory, so each
of the two directories reads back as one data set
(``pandas.read_parquet(DIR / "vm_rows")``).

VM columns: ``time_s``, ``host`` (the host's seed), ``vm`` (its slot), then
esxtop's GRANT, ACTV, MCTLSZ, SWCUR, ZIPPED, SHRDSVD in MiB and the tick's
``throughput``; host columns: ``time_s``, ``host``, ``free_mib``, ``state``
(``MemState``'s number).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hvmem.aggregate import kernel as k
from hvmem.aggregate.model import HostBatch

VM_COLUMNS = ("GRANT", "ACTV", "MCTLSZ", "SWCUR", "ZIPPED", "SHRDSVD", "throughput")
#: VM rows held before a row group is written: about 40 MiB of buffer.
FLUSH_VM_ROWS = 1 << 20


class RowStream:
    """The rows of one task's hosts, written to ``directory`` as they fill a row group.

    Args:
        directory: where ``vm_rows/`` and ``host_rows/`` go (created if missing).
        seeds: the hosts' seeds, in batch order (the ``host`` column).
        n_v: VM slots per host.
    """

    def __init__(self, directory: Path, seeds: list[int], n_v: int) -> None:
        self.seeds = np.asarray(seeds, np.int32)
        n_h = len(seeds)
        self.cap = max(1, FLUSH_VM_ROWS // max(1, n_h * n_v))
        self.vm = np.zeros((self.cap, n_h, n_v, len(VM_COLUMNS)), np.float32)
        self.host = np.zeros((self.cap, n_h, 2), np.float32)
        self.times = np.zeros(self.cap, np.int64)
        self.n = 0
        self.vm_rows = self.host_rows = 0
        self.grant_sum = 0.0
        name = f"part-{int(seeds[0]):07d}.parquet"
        self.paths = (Path(directory) / "vm_rows" / name, Path(directory) / "host_rows" / name)
        self._writers = None

    def add(self, time_s: int, b: HostBatch, tick_ns: float) -> None:
        """The batch's rows at ``time_s`` (what ``fleet.run_batch`` keeps each minute)."""
        if self.n == self.cap:
            self.flush()
        r, mib = self.n, 1.0 / k.PAGES_PER_MIB
        vm, m, out = b.vm, b.m, self.vm[self.n]
        out[..., 0] = (vm[..., k.V_KERNEL] + (m[..., k.PRIV] + m[..., k.FILL]).sum(axis=2)
                       + vm[..., k.V_SHARED]) * mib
        out[..., 1] = vm[..., k.V_SLOW] * vm[..., k.V_PAGES] * mib
        out[..., 2] = m[:, :, k.BALLOON_ROW, k.BALL] * mib
        out[..., 3] = m[..., k.SWP].sum(axis=2) * mib
        out[..., 4] = m[..., k.ZIP].sum(axis=2) * mib
        out[..., 5] = vm[..., k.V_SAVED] * mib
        out[..., 6] = np.maximum(0.0, 1.0 - b.stall.sum(axis=2) / tick_ns)
        self.host[r, :, 0] = b.host[:, k.H_FREE] * mib
        self.host[r, :, 1] = b.host[:, k.H_STATE]
        self.times[r] = time_s
        self.grant_sum += float(out[..., 0].sum(dtype=np.float64))
        self.n += 1

    def flush(self) -> None:
        """Write the buffered minutes as one row group of each file."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        n = self.n
        if n == 0:
            return
        _, n_h, n_v, n_col = self.vm.shape
        times = np.repeat(self.times[:n].astype(np.int32), n_h * n_v)
        hosts = np.tile(np.repeat(self.seeds, n_v), n)
        vms = np.tile(np.arange(n_v, dtype=np.int16), n * n_h)
        flat = self.vm[:n].reshape(-1, n_col)
        vm_table = pa.table({"time_s": times, "host": hosts, "vm": vms,
                             **{c: flat[:, j] for j, c in enumerate(VM_COLUMNS)}})
        hflat = self.host[:n].reshape(-1, 2)
        host_table = pa.table({"time_s": np.repeat(self.times[:n].astype(np.int32), n_h),
                               "host": np.tile(self.seeds, n), "free_mib": hflat[:, 0],
                               "state": hflat[:, 1].astype(np.int8)})
        if self._writers is None:
            for path in self.paths:
                path.parent.mkdir(parents=True, exist_ok=True)
            self._writers = (pq.ParquetWriter(self.paths[0], vm_table.schema),
                             pq.ParquetWriter(self.paths[1], host_table.schema))
        self._writers[0].write_table(vm_table)
        self._writers[1].write_table(host_table)
        self.vm_rows += vm_table.num_rows
        self.host_rows += host_table.num_rows
        self.n = 0

    def close(self) -> None:
        """Write what is left and close the files."""
        self.flush()
        if self._writers is not None:
            for writer in self._writers:
                writer.close()
            self._writers = None

    @property
    def mean_grant_mib(self) -> float:
        """The mean GRANT over every VM row written (a check that rows are real numbers)."""
        return self.grant_sum / max(1, self.vm_rows)
