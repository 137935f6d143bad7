"""``hvmem demo``: a guided run of address translation on the built-in machine.

The same short sequence of guest accesses runs under nested paging and then
under shadow paging, each step explained, and the two are compared. It shows
lazy allocation (the first touch of a page faults into the hypervisor), the
TLB (a repeated access hits), tagged address spaces (switching process needs
no flush), guest page faults the hypervisor reflects to the guest, and what
each paging mode costs where.
"""

from __future__ import annotations

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from hvmem.machine import Machine, builtin_machine
from hvmem.ui.translate_view import render_comparison, render_walk

#: (label, asid, gva, write) of each access; the guest's own actions come between.
DEMO_ACCESSES = (
    ("first write to a heap page", 1, 0x1000_0123, True),
    ("the same address again", 1, 0x1000_0123, False),
    ("the next heap page", 1, 0x1000_1000, False),
    ("a write to read-only code", 1, 0x0040_0000, True),
    ("an address nothing maps", 1, 0x2000_0000, False),
    ("another process, same VM", 2, 0x5555_0040, False),
    ("after munmap of the heap page", 1, 0x1000_0123, False),
    ("its page reused at a new address", 1, 0x3000_0000, True),
)
#: Before the access with this index, the guest frees the first heap page and
#: maps one page at 0x30000000 (which reuses the freed guest-physical page).
UNMAP_BEFORE, REMAP_BEFORE = 6, 7


def _counters(machine: Machine) -> dict[str, int]:
    vm = machine.vm("vm0")
    mmu = vm.mmu.counters
    out = {
        "TLB hits": mmu.tlb_hits,
        "TLB misses": mmu.tlb_misses,
        "walk references": mmu.walk_refs,
        "VM exits (MMU ops)": mmu.exits,
        "hidden faults": mmu.hidden_faults,
        "first-touch faults": vm.host_vm.counters.first_touch_faults,
        "machine frames in use": machine.host.frames.n_used,
    }
    traced = getattr(vm.host_vm.paging, "counters", None)
    out["traced PTE writes"] = traced.traced_writes if traced is not None else 0
    return out


def run_demo(console: Console) -> None:
    """Print the walkthrough."""
    console.print(Rule("hvmem demo: guest virtual -> guest physical -> host physical"))
    console.print(
        "A 64 MiB host runs vm0 (16 MiB). Process 1 maps code (read-only), a heap and a "
        "stack; process 2 maps code and data. No machine memory is given to vm0 until it "
        "touches a page.\n"
    )
    reports: dict[str, list[dict]] = {}
    machines: dict[str, Machine] = {}
    for paging in ("nested", "shadow"):
        console.print(Rule(f"{paging} paging"))
        machine = builtin_machine(paging)
        machines[paging] = machine
        reports[paging] = []
        for k, (label, asid, gva, write) in enumerate(DEMO_ACCESSES):
            if k == UNMAP_BEFORE:
                freed = machine.guest_unmap("vm0", 1, 0x1000_0000 >> 12, 1)
                console.print(f"[dim]the guest unmaps 0x10000000 and frees ppn "
                              f"{int(freed[0]):#x}; it stays backed[/dim]")
            if k == REMAP_BEFORE:
                ppns = machine.guest_map("vm0", 1, 0x3000_0000 >> 12, 1)
                console.print(f"[dim]the guest maps 0x30000000 to ppn {int(ppns[0]):#x} "
                              f"from its free list[/dim]")
            console.print(f"[bold]{label}[/bold]")
            report = machine.explain("vm0", asid, gva, write)
            reports[paging].append(report)
            console.print(render_walk(report))
    console.print(Rule("comparison"))
    console.print(render_comparison([
        (label, n, s) for (label, *_), n, s in zip(DEMO_ACCESSES, reports["nested"],
                                                     reports["shadow"], strict=True)
    ]))
    table = Table(title="counters after the sequence", title_justify="left", show_edge=False,
                  pad_edge=False)
    table.add_column("counter")
    table.add_column("nested", justify="right")
    table.add_column("shadow", justify="right")
    nested, shadow = _counters(machines["nested"]), _counters(machines["shadow"])
    for key in nested:
        table.add_row(key, str(nested[key]), str(shadow[key]))
    console.print()
    console.print(table)
    console.print(
        "\nNested paging needs no exits to keep translations coherent but pays up to 24 "
        "references per TLB miss; shadow paging walks only 4 but exits on hidden faults, "
        "CR3 loads and every write to a guest page table."
    )
