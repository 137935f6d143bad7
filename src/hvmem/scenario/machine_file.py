"""Translation machines described in TOML.

A machine file names the host (memory, paging mode, TLB and page-walk cache),
its VMs and, per VM, guest processes with the regions they map::

    [host]
    memory = "64MiB"
    paging = "nested"            # or "shadow"
    tlb = { entries = 64, ways = 4 }
    pwc_entries = 0              # page-walk cache entries per vCPU; 0 for none

    [[vm]]
    name = "vm0"
    memory = "16MiB"

    [[vm.process]]
    asid = 1
    regions = [
      { gva = "0x400000", size = "32KiB", writable = false },
      { gva = "0x10000000", size = "128KiB" },
    ]

Every field has a default except the region addresses and sizes. A wrong field
is reported on one line naming the file, the path of the field
(``vm[0].process[1].regions[2].gva``), what was expected and what was found.
Memory sizes have a scenario's bounds (a host up to 64 TiB, a VM up to 6 TiB,
``HostConfig`` and ``VmConfig``), and the machine must fit the RAM this
computer has available (:mod:`hvmem.scenario.work_estimate`), both checked
before anything is allocated. The file itself is read as a scenario file is
(:mod:`hvmem.scenario.toml_file`: UTF-8, at most 1 MiB).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hvmem.errors import ConfigError
from hvmem.hardware.frames import MAX_OWNERS
from hvmem.hypervisor.host import PAGING_MODES
from hvmem.machine import Machine, MachineConfig
from hvmem.params import declared, show_raw
from hvmem.scenario.schema import HostConfig, VmConfig
from hvmem.scenario.toml_file import read_toml, show_path
from hvmem.scenario.work_estimate import (
    BASE_BYTES,
    HOST_BYTES_PER_PAGE,
    VM_BYTES_PER_PAGE,
    check_ram,
)
from hvmem.units import PAGE_SHIFT, PAGE_SIZE_BYTES, parse_size_bytes, size_text


class _Fields:
    """Reads one TOML table, naming its path in every error and refusing unknown keys."""

    def __init__(self, file: str, path: str, table: Any, known: set[str]):
        if not isinstance(table, dict):
            raise ConfigError(f"{file}: {path}: expected a table, found {table!r}")
        unknown = sorted(set(table) - known)
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise ConfigError(
                f"{file}: {where}: unknown field (known here: {', '.join(sorted(known))})"
            )
        self.file, self.path, self.table = file, path, table

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def error(self, key: str, expected: str) -> ConfigError:
        found = show_raw(self.table[key])
        return ConfigError(f"{self.file}: {self.where(key)}: expected {expected}, found {found}")

    def size(self, key: str, default: str | None = None, *, bound: tuple[type, str] | None = None
             ) -> int:
        """A size; ``bound`` is the (class, field) of a scenario whose bounds it has."""
        if key not in self.table:
            if default is None:
                raise ConfigError(
                    f"{self.file}: {self.where(key)}: missing (a size such as '4MiB')"
                )
            return parse_size_bytes(default)
        try:
            size_bytes = parse_size_bytes(self.table[key], what=self.where(key))
        except ConfigError as err:
            raise ConfigError(f"{self.file}: {err}") from None
        if size_bytes % PAGE_SIZE_BYTES or size_bytes == 0:
            raise self.error(key, "a positive whole number of 4 KiB pages")
        if bound is not None:
            wanted = declared(*bound).param.problem(size_bytes)
            if wanted is not None:
                raise self.error(key, wanted)
        return size_bytes

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(key, f"a whole number in {low}..{high}")
        return value

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        value = self.table.get(key, default)
        if value not in options:
            raise self.error(key, " or ".join(options))
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.error(key, "true or false")
        return value

    def address(self, key: str) -> int:
        if key not in self.table:
            raise ConfigError(
                f"{self.file}: {self.where(key)}: missing (an address such as '0x400000')"
            )
        value = self.table[key]
        try:
            gva = int(value, 0) if isinstance(value, str) else value
        except ValueError:
            gva = None
        if isinstance(gva, bool) or not isinstance(gva, int) or not 0 <= gva < (1 << 48):
            raise self.error(key, "a 48-bit address such as '0x400000'")
        if gva % PAGE_SIZE_BYTES:
            raise self.error(key, "a 4 KiB-aligned address")
        return gva

    def array(self, key: str) -> list:
        value = self.table.get(key, [])
        if not isinstance(value, list):
            raise self.error(key, "an array of tables")
        return value


def load_machine(path: str | Path) -> Machine:
    """Build the machine a TOML file describes.

    Raises:
        ConfigError: the file is missing, not TOML, or a field is wrong.
    """
    file = show_path(path)
    doc = read_toml(path, "machine file")
    top = _Fields(file, "", doc, {"host", "vm"})
    host = _Fields(file, "host", doc.get("host", {}), {"memory", "paging", "tlb", "pwc_entries"})
    tlb = _Fields(file, "host.tlb", host.table.get("tlb", {}), {"entries", "ways"})
    entries = tlb.integer("entries", 64, 1, 1 << 16)
    ways = tlb.integer("ways", 4, 1, 1 << 16)
    if entries % ways:
        raise ConfigError(f"{file}: host.tlb: {entries} entries do not split into sets of {ways}")
    host_bytes = host.size("memory", "64MiB", bound=(HostConfig, "memory_bytes"))
    vms = top.array("vm")
    if not vms:
        raise ConfigError(f"{file}: vm: the machine needs at least one [[vm]]")
    if len(vms) > MAX_OWNERS:
        raise ConfigError(f"{file}: vm: expected at most {MAX_OWNERS} [[vm]] tables (a host's "
                          f"frame owners), found {len(vms)}")
    vm_bytes = [_Fields(file, f"vm[{i}]", t, {"name", "memory", "process"}).size(
        "memory", "16MiB", bound=(VmConfig, "memory_bytes")) for i, t in enumerate(vms)]
    _check_ram(file, host_bytes, vm_bytes)
    machine = Machine(MachineConfig(
        host_memory_bytes=host_bytes,
        paging=host.choice("paging", "nested", PAGING_MODES),
        tlb_entries=entries,
        tlb_ways=ways,
        pwc_entries=host.integer("pwc_entries", 0, 0, 1 << 12),
    ))
    for i, vm_table in enumerate(vms):
        vm = _Fields(file, f"vm[{i}]", vm_table, {"name", "memory", "process"})
        name = vm.table.get("name", f"vm{i}")
        if not isinstance(name, str) or not name:
            raise vm.error("name", "a non-empty string")
        if name in machine.vms:
            raise vm.error("name", "a name no other vm has")
        machine.add_vm(name, vm_bytes[i])
        for j, proc_table in enumerate(vm.array("process")):
            proc = _Fields(file, f"vm[{i}].process[{j}]", proc_table, {"asid", "regions"})
            asid = proc.integer("asid", j + 1, 1, 4094)
            if asid in machine.vms[name].processes:
                raise proc.error("asid", "an asid no other process of this vm has")
            machine.add_process(name, asid)
            for k, region_table in enumerate(proc.array("regions")):
                region = _Fields(file, f"vm[{i}].process[{j}].regions[{k}]", region_table,
                                 {"gva", "size", "writable"})
                gva = region.address("gva")
                size_bytes = region.size("size")
                writable = region.boolean("writable", True)
                free = machine.vms[name].allocator.n_free
                if size_bytes >> PAGE_SHIFT > free:
                    raise region.error("size", f"at most the {free} pages the guest has free")
                try:
                    machine.guest_map(name, asid, gva >> PAGE_SHIFT, size_bytes >> PAGE_SHIFT,
                                      writable)
                except ConfigError as err:
                    raise ConfigError(f"{file}: {region.path}: {err}") from None
    return machine


def _check_ram(file: str, host_bytes: int, vm_bytes: list[int]) -> None:
    """The machine's frame table and VMs fit the RAM available, or an error naming the field."""
    host_ram = (host_bytes >> PAGE_SHIFT) * HOST_BYTES_PER_PAGE
    vm_ram = [(b >> PAGE_SHIFT) * VM_BYTES_PER_PAGE["mmu"] for b in vm_bytes]
    if host_ram >= sum(vm_ram):
        where: tuple[str | int, ...] = ("host", "memory")
        what = f"a host of {size_text(host_bytes)}"
    else:
        i = max(range(len(vm_ram)), key=vm_ram.__getitem__)
        where = ("vm", i, "memory")
        what = f"a VM of {size_text(vm_bytes[i])}"
    check_ram(BASE_BYTES + host_ram + sum(vm_ram), where, what, file=file, forced_by=None)
