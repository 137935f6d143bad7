"""Benchmarks behind ``hvmem bench``: fixed, seeded workloads, timed on the wall clock.

Speed is measured here, never asserted in tests. Each benchmark compiles its
Numba kernels on a small warm-up run first, so the figures are steady-state
throughput, and reports what it ran alongside how fast.

``translate``: one stream of references, Zipf-popular (alpha 1.2) over the
pages of a 4 GiB guest, with a 64-entry 4-way TLB:

a. the TLB alone (``tlb_only_refs_per_s``);
b. full translation under nested paging, 2-D walks on every miss
   (``nested_refs_per_s``); all guest memory is backed beforehand, so the figure
   is translation, not first-touch allocation;
c. full translation under shadow paging, shadow entries filled lazily by hidden
   faults during the timed run (``shadow_refs_per_s``);
d. the same page stream through pycachesim, a C-core LRU cache simulator, set
   up as the same TLB (16 sets x 4 ways of 4 KiB lines) and fed through its
   batch ``loadstore`` (``pycachesim_refs_per_s``). Its input must be a Python
   list, so its time includes building that list from the array, as any caller
   pays; ``pycachesim_loadstore_only_refs_per_s`` leaves that out.

The TLB-only hit count must equal pycachesim's (``counts_match``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from hvmem.core.rng import RngStreams
from hvmem.errors import HvmemError
from hvmem.hardware.tlb import Tlb
from hvmem.machine import Machine, MachineConfig
from hvmem.units import GIB, NS_PER_S, PAGE_SHIFT, ns_to_s
from hvmem.workloads.samplers import zipf_pages

TRANSLATE_REFS = 5_000_000
TRANSLATE_GUEST_BYTES = 4 * GIB
TRANSLATE_ALPHA = 1.2
TLB_ENTRIES, TLB_WAYS = 64, 4


def _timed(fn) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _translation_machine(paging: str, guest_bytes: int) -> tuple[Machine, str]:
    """One VM of ``guest_bytes`` with one process mapping all of it, fully backed."""
    n_pages = guest_bytes >> PAGE_SHIFT
    # Room for the guest, its tables and the hypervisor's tables (a few per mille).
    machine = Machine(MachineConfig(host_memory_bytes=guest_bytes + guest_bytes // 32,
                                    paging=paging, tlb_entries=TLB_ENTRIES,
                                    tlb_ways=TLB_WAYS))
    vm = machine.add_vm("bench", guest_bytes)
    machine.add_process("bench", 1)
    data_pages = n_pages - n_pages // 256  # leave room for the guest's table pages
    ppns = machine.guest_map("bench", 1, 0, data_pages)
    vm.host_vm.back_pages(ppns)
    machine.switch_to("bench", 1)
    return machine, "bench"


def _pycachesim_run(pages: np.ndarray) -> tuple[int, float, float]:
    from cachesim import Cache, CacheSimulator, MainMemory

    memory = MainMemory()
    tlb = Cache("TLB", TLB_ENTRIES // TLB_WAYS, TLB_WAYS, 1 << PAGE_SHIFT, "LRU")
    memory.load_to(tlb)
    memory.store_from(tlb)
    sim = CacheSimulator(tlb, memory)
    start = time.perf_counter()
    loads = (pages << PAGE_SHIFT).tolist()
    built = time.perf_counter()
    sim.loadstore([(loads, [])], length=1)
    done = time.perf_counter()
    return int(tlb.backend.HIT_count), done - start, done - built


def bench_translate(n_refs: int = TRANSLATE_REFS, seed: int = 1) -> dict[str, Any]:
    """Run the translation benchmark; returns the figures as a JSON-ready dict."""
    try:
        import cachesim  # noqa: F401
    except ImportError:
        raise HvmemError(
            "bench translate needs pycachesim as its reference: pip install 'hvmem[bench]'"
        ) from None
    total_pages = TRANSLATE_GUEST_BYTES >> PAGE_SHIFT
    guest_pages = total_pages - total_pages // 256
    rng = RngStreams(seed).stream("bench/translate")
    vpns = zipf_pages(rng, guest_pages, n_refs, TRANSLATE_ALPHA)
    reads = np.zeros(n_refs, dtype=np.bool_)

    # Warm-up: compile every kernel on a tiny machine.
    Tlb(TLB_ENTRIES, TLB_WAYS).run_pages(vpns[:1000])
    for paging in ("nested", "shadow"):
        small, name = _translation_machine(paging, 64 << 20)
        small.vms[name].host_vm.translate(small.vms[name].mmu, vpns[:1000] % 16000,
                                          reads[:1000])

    tlb = Tlb(TLB_ENTRIES, TLB_WAYS)
    hits, tlb_s = _timed(lambda: tlb.run_pages(vpns))

    results: dict[str, Any] = {}
    for paging in ("nested", "shadow"):
        machine, name = _translation_machine(paging, TRANSLATE_GUEST_BYTES)
        vm = machine.vms[name]
        batch, seconds = _timed(lambda vm=vm: vm.host_vm.translate(vm.mmu, vpns, reads))
        if batch.fault is not None:
            raise HvmemError(f"bench translate: unexpected {batch.fault.kind.name} ({paging})")
        c = vm.mmu.counters
        results[paging] = {
            "refs_per_s": n_refs / seconds,
            "tlb_misses": c.tlb_misses,
            "walk_refs": c.walk_refs,
            "hidden_faults": c.hidden_faults,
            "simulated_ns_per_ref": batch.time_ns / n_refs,
        }
        del machine, vm, batch

    pcs_hits, pcs_s, pcs_core_s = _pycachesim_run(vpns)
    return {
        "tlb_only_refs_per_s": n_refs / tlb_s,
        "nested_refs_per_s": results["nested"]["refs_per_s"],
        "shadow_refs_per_s": results["shadow"]["refs_per_s"],
        "pycachesim_refs_per_s": n_refs / pcs_s,
        "pycachesim_loadstore_only_refs_per_s": n_refs / pcs_core_s,
        "refs": n_refs,
        "guest_pages": guest_pages,
        "zipf_alpha": TRANSLATE_ALPHA,
        "tlb": {"entries": TLB_ENTRIES, "ways": TLB_WAYS},
        "tlb_hits": hits,
        "pycachesim_hits": pcs_hits,
        "counts_match": hits == pcs_hits,
        "nested": {k: v for k, v in results["nested"].items() if k != "refs_per_s"},
        "shadow": {k: v for k, v in results["shadow"].items() if k != "refs_per_s"},
    }


# ---------------------------------------------------------------------------- guest

GUEST_REFS = 5_000_000
GUEST_ZIPF_PAGES = 1 << 20  # a 4 GiB region of 4 KiB pages
GUEST_ALPHA = 1.0
GUEST_FRAMES_FRAC = 0.25
GUEST_LACKEY_LINES = 3_000_000


def bench_guest(n_refs: int = GUEST_REFS, lackey_lines: int = GUEST_LACKEY_LINES,
                seed: int = 1) -> dict[str, Any]:
    """Guest paging and trace-parsing benchmark; returns the figures as a JSON-ready dict.

    ``paging_refs_per_s``: LRU replacement (``replacement.replay.simulate``, page-number
    mapping included) over ``n_refs`` Zipf-popular references (alpha 1.0) drawn from
    ``RngStreams(seed).stream("bench/guest")`` over a region of 2**20 pages, with
    frames for 25% of the footprint, the distinct pages the stream actually touches.

    ``lackey_lines_per_s``: records per second of a streaming parse
    (``workloads.trace.iter_page_numbers``, format detection included) of a
    ``generate_lackey`` file of ``lackey_lines`` records, written to a temporary
    directory that is removed afterwards. The file was just written, so it is read
    from the page cache: the figure is parsing, not disk speed.
    """
    import tempfile
    from pathlib import Path

    from hvmem.replacement.replay import simulate
    from hvmem.workloads.trace import iter_page_numbers
    from hvmem.workloads.trace_writer import generate_lackey

    rng = RngStreams(seed).stream("bench/guest")
    pages = zipf_pages(rng, GUEST_ZIPF_PAGES, n_refs, GUEST_ALPHA)
    footprint = int(np.unique(pages).shape[0])
    frames = max(1, int(footprint * GUEST_FRAMES_FRAC))

    simulate(pages[:100_000], max(1, frames // 8), "lru")  # warm-up: load or compile kernels
    paging, paging_s = _timed(lambda: simulate(pages, frames, "lru"))

    def parse(path: Path) -> int:
        return sum(int(vpns.shape[0]) for vpns, _ in iter_page_numbers(path))

    with tempfile.TemporaryDirectory(prefix="hvmem-bench-") as tmp:
        small, path = Path(tmp) / "warmup.lackey", Path(tmp) / "trace.lackey"
        generate_lackey(small, 10_000, seed)
        parse(small)  # warm-up
        generate_lackey(path, lackey_lines, seed)
        trace_bytes = path.stat().st_size
        parsed, lackey_s = _timed(lambda: parse(path))
    if parsed != lackey_lines:
        raise HvmemError(f"bench guest: parsed {parsed} of {lackey_lines} Lackey records")

    return {
        "paging_refs_per_s": n_refs / paging_s,
        "lackey_lines_per_s": lackey_lines / lackey_s,
        "lackey_mib_per_s": trace_bytes / lackey_s / (1 << 20),
        "policy": "lru",
        "refs": n_refs,
        "zipf_pages": GUEST_ZIPF_PAGES,
        "zipf_alpha": GUEST_ALPHA,
        "footprint_pages": footprint,
        "frames": frames,
        "hits": paging.hits,
        "misses": paging.misses,
        "paging_s": paging_s,
        "lackey_lines": lackey_lines,
        "lackey_bytes": trace_bytes,
        "lackey_s": lackey_s,
    }


# -- hvmem bench host -------------------------------------------------------------------
SHARING_PAGES = 8 << 20  # pages the sharing scan covers (32 GiB of guest memory)
SHARING_VMS = 8
SWAP_VM_PAGES = 2 << 20  # an 8 GiB VM ...
SWAP_OUT_PAGES = 1 << 20  # ... of which 1 Mi pages are reclaimed by swapping
SCAN_BATCH_PAGES = 1 << 18  # pages handed to the scanner per call


def _bench_contents(rng: np.random.Generator, n: int) -> np.ndarray:
    """Content tokens: 20 % zero pages, 30 % from a pool of image pages, 50 % unique."""
    kind = rng.random(n)
    tokens = rng.integers(1, 1 << 62, n, dtype=np.int64).astype(np.uint64)
    pool = rng.integers(1, 1 << 62, 100_000, dtype=np.int64).astype(np.uint64)
    image = (kind >= 0.2) & (kind < 0.5)
    tokens[image] = pool[rng.integers(0, pool.size, int(image.sum()))]
    tokens[kind < 0.2] = 0
    return tokens


SHARING_RUNS = 3  # scans of fresh, identical hosts; the fastest is the figure


def bench_host(seed: int = 1, scan_pages: int = SHARING_PAGES) -> dict[str, Any]:
    """Page-sharing scan and swap-out throughput of the hypervisor's mechanisms.

    The sharing scan is timed on ``SHARING_RUNS`` fresh hosts holding the same
    contents, and the figure is the fastest run, as ``timeit`` reports: the
    code does the same work each time, and a slower run measures what else the
    machine was doing (on the 2-core machine of the reference runs, one scan
    took 0.35-0.57 s). The median and every run's time are reported beside it.

    Args:
        seed: seed of the page contents and choices.
        scan_pages: pages the sharing scan covers, over ``SHARING_VMS`` VMs; the
            swap-out part scales with it (a VM of a quarter as many pages, an
            eighth swapped out). The default is the benchmark; fewer run the
            same code in less time, as a check that it runs.

    Raises:
        HvmemError: ``scan_pages`` is not a positive multiple of ``SHARING_VMS``.
    """
    if scan_pages <= 0 or scan_pages % SHARING_VMS:
        raise HvmemError(f"--scan-pages: expected a positive multiple of {SHARING_VMS}, "
                         f"found {scan_pages}")
    swap_vm_pages = scan_pages * SWAP_VM_PAGES // SHARING_PAGES
    swap_out_pages = scan_pages * SWAP_OUT_PAGES // SHARING_PAGES
    from hvmem.hardware.page_table import TableStore
    from hvmem.hypervisor.host import Host

    def fully_backed_host(rng: np.random.Generator, n_vms: int, vm_pages: int,
                          salting: str) -> Host:
        host = Host(n_vms * vm_pages + (1 << 16), "nested", salting=salting)
        for k in range(n_vms):
            vm = host.add_vm(f"vm{k}", vm_pages, TableStore(vm_pages, f"vm{k}"))
            mpns = vm.back_pages(np.arange(vm_pages))
            host.frames.content[mpns] = _bench_contents(rng, vm_pages)
        return host

    def sharing_run() -> tuple[float, dict[str, int]]:
        rng = RngStreams(seed).stream("bench/host")  # the same host every run
        host = fully_backed_host(rng, SHARING_VMS, scan_pages // SHARING_VMS, "across")
        used_before = host.frames.n_used
        # Each VM's pages in a random order, handed over in batches, each batch in
        # ascending PPN order as Host.scan_for_sharing hands over its random sample.
        batches = []
        for vm in host.vms:
            pages = rng.permutation(vm.n_ppns)
            batches += [(vm, np.sort(pages[lo : lo + SCAN_BATCH_PAGES]))
                        for lo in range(0, pages.size, SCAN_BATCH_PAGES)]
        # The table's array at the size the scan fills, as on a host that has run a
        # while: the figure is the scan's, not the array's growth.
        host.sharing.reserve(scan_pages)
        start = time.perf_counter()
        for vm, pages in batches:
            vm.share_scan(pages)
        scan_s = time.perf_counter() - start
        counters = host.sharing.counters
        host.check_invariants()
        return scan_s, {
            "pages": scan_pages,
            "frames_freed": used_before - host.frames.n_used,
            "hint_promotions": counters.hint_promotions,
            "shared": counters.shared,
        }

    # Warm-up: compile the kernels on a small host.
    rng = RngStreams(seed).stream("bench/host/warm-up")
    small = fully_backed_host(rng, 2, 4096, "across")
    for vm in small.vms:
        vm.share_scan(np.arange(vm.n_ppns))
    small.vms[0].swap_out(1024, "random", rng)

    runs = [sharing_run() for _ in range(SHARING_RUNS)]
    scan_s = [t for t, _ in runs]
    sharing = runs[0][1]
    if any(r != sharing for _, r in runs):
        raise HvmemError("bench host: identical sharing runs gave different results")

    rng = RngStreams(seed).stream("bench/host/swap")
    host = fully_backed_host(rng, 1, swap_vm_pages, "within")
    vm = host.vms[0]
    start = time.perf_counter()
    swapped = vm.swap_out(swap_out_pages, "random", rng)
    swap_s = time.perf_counter() - start
    host.check_invariants()
    return {
        "sharing_scan_pages_per_s": scan_pages / min(scan_s),
        "sharing_scan_median_pages_per_s": scan_pages / float(np.median(scan_s)),
        "swap_out_pages_per_s": swapped / swap_s,
        "sharing": {**sharing, "runs_s": scan_s},
        "swap": {"vm_pages": swap_vm_pages, "pages_swapped": swapped},
    }


# -- hvmem bench host: a whole scenario ----------------------------------------------------
#: The end-to-end benchmark: a 64 GiB host, 32 VMs of 4 GiB, one simulated hour.
BENCH_SCENARIO = "bench-32vm"


def bench_scenario(name: str = BENCH_SCENARIO, duration_s: float | None = None
                   ) -> dict[str, Any]:
    """Simulate a shipped scenario in a child process: speed and peak memory.

    The child is a fresh interpreter, so its peak resident set is the
    simulation's own (this process has just held the sharing benchmark's
    32 GiB host) and includes every array the run allocated; Numba kernels
    come from the on-disk cache, so ``setup_s`` (loading the scenario,
    building the host, powering on nothing yet) and ``run_s`` exclude
    compilation after the first run on a machine.

    Args:
        name: a shipped scenario.
        duration_s: simulate only this much of it (whole ticks; default: all).

    Returns:
        ``sim_seconds_per_wall_second`` (simulated time over ``run_s``),
        ``peak_rss_mib``, and what ran.
    """
    import json
    import subprocess
    import sys

    args = json.dumps({"name": name, "duration_s": duration_s})
    code = f"from hvmem.bench import _scenario_child; _scenario_child({args!r})"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise HvmemError(f"bench scenario {name}: the simulation failed: {last}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def bench_aggregate(name: str = "bench-32vm", duration_s: float | None = None) -> dict:
    """A shipped scenario at aggregate fidelity, timed in a child process of its own.

    The figure ``hvmem bench host`` reports as
    ``aggregate_sim_seconds_per_wall_second``: the same run as
    :func:`bench_scenario`, but over masses of pages (``aggregate/``).
    """
    import json
    import subprocess
    import sys

    args = json.dumps({"name": name, "duration_s": duration_s, "fidelity": "aggregate"})
    code = f"from hvmem.bench import _scenario_child; _scenario_child({args!r})"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=False)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or ["no output"])[-1]
        raise HvmemError(f"bench scenario {name} at aggregate fidelity: {last}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def _scenario_child(args_json: str) -> None:
    """Body of :func:`bench_scenario`'s child: run, then print one JSON line."""
    import dataclasses
    import gc
    import json
    import resource

    from hvmem.scenario.loader import load_scenario
    from hvmem.scenarios import builtin_scenario_path
    from hvmem.sim import Simulation

    args = json.loads(args_json)
    scenario = load_scenario(builtin_scenario_path(args["name"]))
    if args["duration_s"] is not None:
        ticks = max(1, round(args["duration_s"] * NS_PER_S / scenario.tick_ns))
        scenario = dataclasses.replace(scenario, duration_ns=ticks * scenario.tick_ns)
    if args.get("fidelity"):
        scenario = dataclasses.replace(scenario, fidelity=args["fidelity"])
    if args.get("fidelity") == "aggregate":
        # Numba compiles on first use, seconds against an aggregate hour's one: one tick
        # of the same scenario first, so the figure times the model and not the compiler.
        # (A page-fidelity warm-up would leave ~200 MiB in the peak RSS it reports, for
        # a compile of a few seconds in its minutes.)
        Simulation(dataclasses.replace(scenario, duration_ns=scenario.tick_ns)).run()
        gc.collect()
    start = time.perf_counter()
    sim = Simulation(scenario)
    setup_s = time.perf_counter() - start
    window = PressureWindow()
    start = time.perf_counter()
    cpu_start = time.process_time()
    result = sim.run(on_tick=window.on_tick)
    run_s = time.perf_counter() - start
    run_cpu_s = time.process_time() - cpu_start
    simulated_s = ns_to_s(result.ticks_done * scenario.tick_ns)
    # ru_maxrss is in KiB on Linux.
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "sim_seconds_per_wall_second": simulated_s / run_s,
        "pressure_window_sim_seconds_per_wall_second": window.sim_seconds_per_wall_second(),
        "peak_rss_mib": peak_rss_mib,
        "scenario": scenario.name,
        "vms": len(scenario.vms),
        "simulated_s": simulated_s,
        "setup_s": setup_s,
        "run_s": run_s,
        # CPU seconds of the run, both threads (workload drawing and serving): the
        # figure to compare on a shared machine, where wall time is the neighbours' too.
        "run_cpu_s": run_cpu_s,
        "pressure_window_cpu_s": window.cpu_s(),
    }))


# -- hvmem bench host: the pressure window -------------------------------------------------
#: Simulated seconds of bench-32vm past its first minutes: they never leave HIGH, so
#: the whole hour's figure says little about the ticks that swap, compress and balloon.
PRESSURE_WINDOW_S = (300.0, 420.0)


class PressureWindow:
    """Wall time of the ticks that end inside ``PRESSURE_WINDOW_S`` of a run.

    Given to :meth:`Simulation.run` as ``on_tick``: it reads the wall clock when
    the simulated time reaches the window's start and its end, so the figure
    is the same run's, not a second one's.
    """

    def __init__(self, window_s: tuple[float, float] = PRESSURE_WINDOW_S) -> None:
        self.window_s = window_s
        # window edge -> (sim s, wall s, CPU s of the process)
        self.marks: dict[float, tuple[float, float, float]] = {}

    def on_tick(self, sim: Any) -> None:
        """After each tick: note the wall clock the first time an edge is reached."""
        done_s = ns_to_s(sim.result.ticks_done * sim.scenario.tick_ns)
        for edge in self.window_s:
            if edge not in self.marks and done_s >= edge:
                self.marks[edge] = (done_s, time.perf_counter(), time.process_time())

    def sim_seconds_per_wall_second(self) -> float | None:
        """Simulated over wall seconds inside the window; None if the run stopped short."""
        if len(self.marks) < 2:
            return None
        (sim0, wall0, _), (sim1, wall1, _) = (self.marks[e] for e in self.window_s)
        return (sim1 - sim0) / (wall1 - wall0) if wall1 > wall0 else None

    def cpu_s(self) -> float | None:
        """CPU seconds of the process inside the window; None if the run stopped short."""
        if len(self.marks) < 2:
            return None
        (_, _, cpu0), (_, _, cpu1) = (self.marks[e] for e in self.window_s)
        return cpu1 - cpu0
