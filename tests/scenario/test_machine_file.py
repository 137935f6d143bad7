"""Tests of scenario/machine_file.py: TOML machines and their path-qualified errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hvmem.errors import ConfigError
from hvmem.scenario.machine_file import load_machine

VALID = """\
[host]
memory = "64MiB"
paging = "{paging}"
tlb = {{ entries = 16, ways = 4 }}
pwc_entries = 8

[[vm]]
name = "web"
memory = "8MiB"

[[vm.process]]
asid = 3
regions = [
  {{ gva = "0x400000", size = "32KiB", writable = false }},
  {{ gva = "0x10000000", size = "128KiB" }},
]

[[vm.process]]
regions = [ {{ gva = "0x10000000", size = "4KiB" }} ]

[[vm]]
memory = "4MiB"
"""


def write(tmp_path: Path, text: str, name: str = "machine.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("paging", ["nested", "shadow"])
def test_valid_file_builds_the_machine(tmp_path, paging):
    machine = load_machine(write(tmp_path, VALID.format(paging=paging)))
    assert machine.config.paging == paging
    assert machine.config.host_memory_bytes == 64 << 20
    assert (machine.config.tlb_entries, machine.config.tlb_ways) == (16, 4)
    assert machine.config.pwc_entries == 8
    assert list(machine.vms) == ["web", "vm1"]  # the second vm takes its default name
    web = machine.vm("web")
    assert sorted(web.processes) == [2, 3]  # the second process defaults to asid j + 1 = 2
    assert web.mmu.tlb.entries == 16
    assert machine.vm("vm1").processes == {}

    report = machine.explain("web", 3, 0x1000_1234, is_write=True)
    assert "fault" not in report
    assert report["paging"] == paging
    ppn = web.processes[3].lookup_ppn(0x10001)
    mpn = int(web.host_vm.pmap.mpn[ppn])
    assert mpn >= 0  # touched, so backed now
    assert report["gpa"] == f"{(ppn << 12) | 0x234:#x}"
    assert report["hpa"] == f"{(mpn << 12) | 0x234:#x}"
    assert report["walk_refs"] >= 4

    # The code region is read-only: the guest's table forbids a write.
    code = machine.explain("web", 3, 0x400010, is_write=True)
    assert code["fault"] == "GUEST_PROTECTION"
    assert "gpa" not in code
    assert "gpa" in machine.explain("web", 3, 0x400010)
    # Nothing is mapped beyond the regions.
    assert machine.explain("web", 3, 0x400000 + 8 * 4096)["fault"] == "GUEST_NOT_PRESENT"
    # The same address in another process is a different mapping.
    other = machine.explain("web", 2, 0x1000_0000)
    assert "fault" not in other
    assert other["ppn"] != f"{web.processes[3].lookup_ppn(0x10000):#x}"


def test_defaults_for_an_almost_empty_file(tmp_path):
    machine = load_machine(write(tmp_path, "[[vm]]\n"))
    assert machine.config.paging == "nested"
    assert machine.config.host_memory_bytes == 64 << 20
    assert (machine.config.tlb_entries, machine.config.tlb_ways) == (64, 4)
    assert list(machine.vms) == ["vm0"]
    assert machine.vm("vm0").host_vm.n_ppns == (16 << 20) >> 12


def load_error(path: Path | str) -> str:
    with pytest.raises(ConfigError) as info:
        load_machine(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(str(path)), message
    return message


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    message = load_error(path)
    assert "no such file" in message


def test_invalid_toml(tmp_path):
    message = load_error(write(tmp_path, "[host\nmemory = 4\n"))
    assert "TOML" in message


REGION = 'regions = [ {{ gva = "0x400000", size = "8KiB" }}, {{ {second} }} ]'


def machine_text(host: str = "", vm: str = 'memory = "1MiB"',
                 second: str = 'gva = "0x800000", size = "8KiB"') -> str:
    return (f"[host]\n{host}\n\n[[vm]]\n{vm}\n\n[[vm.process]]\n"
            + REGION.format(second=second) + "\n")


@pytest.mark.parametrize(
    ("text", "where", "words"),
    [
        # unknown fields, at every depth
        ("colour = 1\n[[vm]]\n", "colour", "unknown field"),
        (machine_text(host="swap = true"), "host.swap", "unknown field"),
        (machine_text(host="tlb = { entries = 8, ways = 2, policy = 'lru' }"),
         "host.tlb.policy", "unknown field"),
        (machine_text(second='gva = "0x800000", size = "8KiB", exec = true'),
         "vm[0].process[0].regions[1].exec", "unknown field"),
        # sizes
        (machine_text(host='memory = "12 parsecs"'), "host.memory", "unit"),
        (machine_text(vm='memory = "lots"'), "vm[0].memory", "size"),
        (machine_text(vm='memory = "6KiB"'), "vm[0].memory", "4 KiB pages"),
        (machine_text(second='gva = "0x800000", size = "0KiB"'),
         "vm[0].process[0].regions[1].size", "4 KiB pages"),
        (machine_text(second='gva = "0x800000", size = "1.5KiB"'),
         "vm[0].process[0].regions[1].size", "4 KiB pages"),
        (machine_text(second='gva = "0x800000"'),
         "vm[0].process[0].regions[1].size", "missing"),
        # paging
        (machine_text(host='paging = "hybrid"'), "host.paging", "'hybrid'"),
        # TLB geometry
        (machine_text(host="tlb = { entries = 10, ways = 4 }"), "host.tlb", "10 entries"),
        (machine_text(host="tlb = { entries = 0 }"), "host.tlb.entries", "whole number"),
        (machine_text(host="tlb = { ways = 'four' }"), "host.tlb.ways", "'four'"),
        (machine_text(host="pwc_entries = -1"), "host.pwc_entries", "-1"),
        # addresses
        (machine_text(second='gva = "0x800001", size = "8KiB"'),
         "vm[0].process[0].regions[1].gva", "aligned"),
        (machine_text(second='gva = "elsewhere", size = "8KiB"'),
         "vm[0].process[0].regions[1].gva", "'elsewhere'"),
        (machine_text(second='size = "8KiB"'), "vm[0].process[0].regions[1].gva", "missing"),
        # a region larger than the guest's memory (1 MiB = 256 pages)
        (machine_text(second='gva = "0x800000", size = "2MiB"'),
         "vm[0].process[0].regions[1].size", "free"),
        # overlapping regions
        (machine_text(second='gva = "0x401000", size = "8KiB"'),
         "vm[0].process[0].regions[1]", "mapped already"),
        # a region running off the end of the 48-bit space
        (machine_text(second='gva = "0xfffffffff000", size = "8KiB"'),
         "vm[0].process[0].regions[1]", "48-bit"),
        # vm and process fields
        ('[[vm]]\nname = "a"\n[[vm]]\nname = "a"\n', "vm[1].name", "'a'"),
        (machine_text(vm='memory = "1MiB"\nname = 7'), "vm[0].name", "7"),
        ("[[vm]]\n[[vm.process]]\nasid = 5000\n", "vm[0].process[0].asid", "5000"),
        ("[[vm]]\n[[vm.process]]\nasid = 2\n[[vm.process]]\nasid = 2\n",
         "vm[0].process[1].asid", "2"),
        (machine_text(second='gva = "0x800000", size = "8KiB", writable = "no"'),
         "vm[0].process[0].regions[1].writable", "true or false"),
        ("[host]\n", "vm", "at least one"),
        ("vm = 3\n", "vm", "array"),
    ],
)
def test_errors_name_file_and_path(tmp_path, text, where, words):
    path = write(tmp_path, text, "bad-machine.toml")
    message = load_error(path)
    assert f"{path}: {where}" in message, message
    assert words in message, message
