"""In-process tests of the ``hvmem`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hvmem import __version__
from hvmem.ui.cli import app

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: str) -> str:
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def user_error(*args: str) -> str:
    """Run a command that must fail with exit 1 and one ``hvmem: error:`` line."""
    result = run(*args)
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    err = result.stderr
    assert err.startswith("hvmem: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err + result.stdout
    return err.strip()


def pycachesim_counts(n_sets: int, ways: int, pages: list[int]) -> dict[str, int]:
    from cachesim import Cache, CacheSimulator, MainMemory

    mem = MainMemory()
    cache = Cache("T", n_sets, ways, 4096, "LRU")
    mem.load_to(cache)
    mem.store_from(cache)
    sim = CacheSimulator(cache, mem)
    sim.loadstore([([p * 4096 for p in pages], [])], length=1)
    hits = int(cache.backend.HIT_count)
    return {"accesses": len(pages), "hits": hits, "misses": len(pages) - hits}


# --- top level ------------------------------------------------------------------------------


def test_version():
    assert ok("--version").strip() == f"hvmem {__version__}"


def test_help_lists_subcommands():
    out = ok("--help")
    for name in ("translate", "tlb", "demo", "bench"):
        assert name in out
    assert "translate" in ok("bench", "--help")


def test_unknown_flag_is_a_usage_error():
    result = run("translate", "0x400000", "--no-such-flag")
    assert result.exit_code == 2
    assert "--no-such-flag" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr + result.stdout
    assert run("--bogus").exit_code == 2


# --- translate -------------------------------------------------------------------------------


def test_translate_json_one_report():
    reports = json.loads(ok("translate", "0x10000123", "--json"))
    assert isinstance(reports, list)
    assert len(reports) == 1
    (report,) = reports
    assert report["gva"] == "0x10000123"
    assert report["paging"] == "nested"
    assert report["access"] == "read"
    assert "fault" not in report
    assert int(report["gpa"], 16) & 0xFFF == 0x123
    assert int(report["hpa"], 16) & 0xFFF == 0x123
    assert int(report["gpa"], 16) >> 12 == int(report["ppn"], 16)
    assert int(report["hpa"], 16) >> 12 == int(report["mpn"], 16)
    events = [s["event"] for s in report["steps"]]
    assert events[0] == "TLB miss"
    assert "hypervisor fault: first touch" in events  # the heap page was never touched
    tables = {s.get("table") for s in report["steps"] if s["event"] == "read"}
    assert tables == {"guest", "nested"}
    assert report["walk_refs"] == events.count("read")


def test_translate_twice_hits_the_tlb_the_second_time():
    first, second = json.loads(ok("translate", "0x10000123", "0x10000123", "--json"))
    assert first["steps"][0]["event"] == "TLB miss"
    assert [s["event"] for s in second["steps"]] == ["TLB hit"]
    assert second["hpa"] == first["hpa"]
    assert second["walk_refs"] == 0
    assert second["cost_ns"] < first["cost_ns"]


def test_translate_shadow_paging():
    first, second = json.loads(
        ok("translate", "--paging", "shadow", "0x10000123", "0x10000123", "--json"))
    assert first["paging"] == "shadow"
    assert "fault" not in first
    tables = {s.get("table") for s in first["steps"] if s["event"] == "read"}
    assert tables == {"shadow"}
    assert any(s["event"].startswith("hidden fault") for s in first["steps"])
    assert [s["event"] for s in second["steps"]] == ["TLB hit"]
    # Same guest, same guest-physical page, whichever paging mode.
    nested = json.loads(ok("translate", "0x10000123", "--json"))[0]
    assert first["gpa"] == nested["gpa"]


def test_translate_reports_a_guest_fault_without_failing():
    (report,) = json.loads(ok("translate", "0x20000000", "--json"))
    assert report["fault"] == "GUEST_NOT_PRESENT"
    assert "hpa" not in report
    (report,) = json.loads(ok("translate", "0x400000", "--write", "--json"))
    assert report["fault"] == "GUEST_PROTECTION"


def test_translate_human_output():
    out = ok("translate", "0x10000123")
    assert "0x10000123" in out


@pytest.mark.parametrize("gva", ["zzz", "0x1000000000000", "-5", "0x12g"])
def test_translate_bad_gva(gva):
    err = user_error("translate", "--", gva)  # "--": "-5" is an argument, not a flag
    assert repr(gva) in err


def test_translate_pwc_range_and_machine_conflicts(tmp_path):
    assert "--pwc" in user_error("translate", "0x400000", "--pwc", "5000")
    machine = tmp_path / "m.toml"
    machine.write_text('[[vm]]\n[[vm.process]]\nregions = [{ gva = "0x400000", size = "4KiB" }]\n')
    (report,) = json.loads(ok("translate", "0x400008", "--machine", machine, "--json"))
    assert "fault" not in report
    err = user_error("translate", "0x400008", "--machine", machine, "--paging", "shadow")
    assert "--machine" in err
    missing = tmp_path / "missing.toml"
    assert str(missing) in user_error("translate", "0x1", "--machine", missing)


# --- tlb ----------------------------------------------------------------------------------------

# Pages 1, 1, 2, 3, 1, 2 (4 KiB pages); all in page 0 with 2 MiB pages.
ADDR_TRACE = """\
# a tiny address trace
0x1000
0x1ff8

0X2000
0x3000
4100
8192
"""
# Two-entry fully associative LRU: 1 miss, 1 hit, 2 miss, 3 miss, 1 miss, 2 miss.
ADDR_COUNTS_4K = {"accesses": 6, "hits": 1, "misses": 5}
ADDR_COUNTS_2M = {"accesses": 6, "hits": 5, "misses": 1}

# OSTEP ch. 22's LRU example: cache of 3, stream 0 1 2 0 1 3 0 3 1 2 1 -> 6 hits, 5 misses.
OSTEP_PAGES = [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 1]

LACKEY_TRACE = """\
==4242== Lackey, an example Valgrind tool
==4242== Command: ./a.out
I  00401000,4
 L 00402008,8
 S 00401010,4
 M 00403000,8
I  00401004,4
 L 7ff000398,8
==4242==
"""
LACKEY_PAGES = [0x401, 0x402, 0x401, 0x403, 0x401, 0x7FF000]


def tlb_json(*args) -> dict:
    out = ok("tlb", *args, "--json")
    counts = json.loads(out)
    assert set(counts) == {"accesses", "hits", "misses"}
    return counts


def trace_file(tmp_path: Path, text: str, name: str = "trace.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tlb_plain_addresses(tmp_path):
    path = trace_file(tmp_path, ADDR_TRACE)
    assert tlb_json(path, "--entries", "2", "--ways", "2") == ADDR_COUNTS_4K
    assert tlb_json(path, "--entries", "2", "--ways", "2", "--format", "addr") == ADDR_COUNTS_4K
    assert pycachesim_counts(1, 2, [1, 1, 2, 3, 1, 2]) == ADDR_COUNTS_4K


def test_tlb_large_pages_change_the_counts(tmp_path):
    path = trace_file(tmp_path, ADDR_TRACE)
    args = (path, "--entries", "2", "--ways", "2")
    assert tlb_json(*args, "--page-size", "2MiB") == ADDR_COUNTS_2M
    # With 2 MiB pages, addresses 2 MiB apart are different pages again.
    far = trace_file(tmp_path, "0x0\n0x200000\n0x400000\n0x0\n", "far.txt")
    assert tlb_json(far, "--entries", "2", "--ways", "2", "--page-size", "2MiB") == {
        "accesses": 4, "hits": 0, "misses": 4}
    assert tlb_json(far, "--entries", "2", "--ways", "2", "--page-size", "1GiB") == {
        "accesses": 4, "hits": 3, "misses": 1}


def test_tlb_ostep_pages_file(tmp_path):
    path = trace_file(tmp_path, "\n".join(map(str, OSTEP_PAGES)) + "\n", "ostep.pages")
    expected = {"accesses": 11, "hits": 6, "misses": 5}
    assert tlb_json(path, "--pages", "--entries", "3", "--ways", "3") == expected
    assert expected == pycachesim_counts(1, 3, OSTEP_PAGES)
    # Page numbers are never shifted, so the page size does not matter.
    assert tlb_json(path, "--pages", "--entries", "3", "--ways", "3",
                    "--page-size", "2MiB") == expected
    # Direct-mapped, 4 sets: page mod 4 picks the set.
    assert tlb_json(path, "--pages", "--entries", "4", "--ways", "1") == pycachesim_counts(
        4, 1, OSTEP_PAGES)


def test_tlb_lackey_file(tmp_path):
    path = trace_file(tmp_path, LACKEY_TRACE, "prog.lackey")
    # 401 m, 402 m, 401 h, 403 m (evicts 402), 401 h, 7ff000 m (evicts 403).
    expected = {"accesses": 6, "hits": 2, "misses": 4}
    assert tlb_json(path, "--entries", "2", "--ways", "2") == expected
    assert expected == pycachesim_counts(1, 2, LACKEY_PAGES)
    assert tlb_json(path, "--entries", "2", "--ways", "2", "--format", "lackey") == expected
    assert tlb_json(path, "--entries", "8", "--ways", "2") == pycachesim_counts(
        4, 2, LACKEY_PAGES)


def test_tlb_default_geometry_matches_pycachesim(tmp_path):
    pages = [(i * 7919) % 97 for i in range(500)]
    path = trace_file(tmp_path, "".join(f"{p * 4096 + 8:#x}\n" for p in pages))
    assert tlb_json(path) == pycachesim_counts(16, 4, pages)


def test_tlb_human_output(tmp_path):
    out = ok("tlb", trace_file(tmp_path, ADDR_TRACE), "--entries", "2", "--ways", "2")
    assert "accesses 6" in out
    assert "hits 1" in out
    assert "misses 5" in out


def test_tlb_malformed_line_names_file_line_and_text(tmp_path):
    path = trace_file(tmp_path, "0x1000\n# fine\n0x2000 oops\n0x3000\n")
    err = user_error("tlb", path)
    assert f"{path}:3" in err
    assert "0x2000 oops" in err
    pages = trace_file(tmp_path, "1\n2\nthree\n", "bad.pages")
    err = user_error("tlb", pages, "--pages")
    assert f"{pages}:3" in err
    assert "three" in err
    lackey = trace_file(tmp_path, "==1== x\nI  00401000,4\n L nothex,8\n", "bad.lackey")
    err = user_error("tlb", lackey)
    assert f"{lackey}:3" in err
    assert "nothex" in err


@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_tlb_empty_trace(tmp_path, text):
    path = trace_file(tmp_path, text, "empty.txt")
    err = user_error("tlb", path)
    assert str(path) in err
    assert "no references" in err


def test_tlb_bad_arguments(tmp_path):
    path = trace_file(tmp_path, ADDR_TRACE)
    assert "--page-size" in user_error("tlb", path, "--page-size", "8KiB")
    assert "--page-size" in user_error("tlb", path, "--page-size", "huge")
    assert "--entries" in user_error("tlb", path, "--entries", "6", "--ways", "4")
    assert "--ways" in user_error("tlb", path, "--ways", "0")
    assert "no such file" in user_error("tlb", tmp_path / "absent.txt")


# --- demo and bench -----------------------------------------------------------------------------


def test_demo_walkthrough():
    out = ok("demo", "--walkthrough")
    assert "nested paging" in out
    assert "shadow paging" in out
    assert "TLB hits" in out


def test_bench_translate_json():
    result = json.loads(ok("bench", "translate", "--refs", "20000", "--json"))
    for key in ("tlb_only_refs_per_s", "nested_refs_per_s", "shadow_refs_per_s",
                "pycachesim_refs_per_s"):
        assert result[key] > 0, key
    assert result["counts_match"] is True
    assert result["refs"] == 20000
    assert result["tlb_hits"] == result["pycachesim_hits"]
    assert 0 < result["tlb_hits"] < 20000
    # Nested translation misses exactly where the TLB alone does, 24 references a miss.
    assert result["nested"]["tlb_misses"] == 20000 - result["tlb_hits"]
    assert result["nested"]["walk_refs"] == 24 * result["nested"]["tlb_misses"]


def test_bench_translate_bad_refs():
    assert "--refs" in user_error("bench", "translate", "--refs", "0")


def test_minfree_json_matches_the_esxi5_sliding_scale():
    result = runner.invoke(app, ["minfree", "--memory", "128GiB", "--profile", "esxi5", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # 6% of 4 GiB + 4% of 8 GiB + 2% of 16 GiB + 1% of the remaining 100 GiB
    assert report["minfree_mib"] == pytest.approx(245.76 + 327.68 + 327.68 + 1024)
    assert report["thresholds_mib"]["soft"] == pytest.approx(0.64 * report["minfree_mib"])
    assert "clear" not in report["thresholds_mib"]


def test_minfree_bad_profile_is_one_line():
    result = runner.invoke(app, ["minfree", "--memory", "1GiB", "--profile", "esx9"])
    assert result.exit_code == 1
    assert "esx9" in result.output and "Traceback" not in result.output
