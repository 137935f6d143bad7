"""In-process tests of ``hvmem paging`` and ``hvmem bench guest``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hvmem.replacement.names import REPLAY_POLICIES
from hvmem.replacement.replay import simulate
from hvmem.ui.cli import app
from hvmem.workloads.trace import read_page_numbers
from hvmem.workloads.trace_writer import generate_lackey

runner = CliRunner()

# OSTEP ch. 22, 3 frames: OPT 6 hits (Fig. 22.1), FIFO 4 (Fig. 22.2), LRU 6 (Fig. 22.5);
# CLOCK, worked by hand in tests/guest/test_replacement.py, 4.
OSTEP_PAGES = [0, 1, 2, 0, 1, 3, 0, 3, 1, 2, 1]
OSTEP_HITS = {"opt": 6, "fifo": 4, "lru": 6, "clock": 4}

# Pages 1, 1, 2, 3, 1, 2 with 4 KiB pages; all page 0 with 2 MiB pages.
ADDR_TRACE = """\
# a tiny address trace
0x1000
0x1ff8

0X2000
0x3000
4100
8192
"""

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


def run(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], **kwargs)


def ok(*args, **kwargs) -> str:
    result = run(*args, **kwargs)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout


def user_error(*args) -> str:
    """Run a command that must fail with exit 1 and one ``hvmem: error:`` line."""
    result = run(*args)
    assert result.exit_code == 1, (result.stdout, result.stderr, result.exception)
    err = result.stderr
    assert err.startswith("hvmem: error: "), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err + result.stdout
    return err.strip()


def paging_json(*args, **kwargs) -> dict:
    counts = json.loads(ok("paging", *args, "--json", **kwargs))
    assert list(counts) == ["accesses", "hits", "misses"]
    assert counts["hits"] + counts["misses"] == counts["accesses"]
    return counts


def counts_of(pages, frames: int, policy: str, seed: int = 0) -> dict:
    r = simulate(np.asarray(pages, dtype=np.int64), frames, policy, seed)
    return {"accesses": r.accesses, "hits": r.hits, "misses": r.misses}


def trace_file(tmp_path: Path, text: str, name: str = "trace.txt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def ostep_file(tmp_path) -> Path:
    return trace_file(tmp_path, "\n".join(map(str, OSTEP_PAGES)) + "\n", "ostep.pages")


# --- formats ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("policy", "hits"), sorted(OSTEP_HITS.items()))
def test_ostep_pages_file(ostep_file, policy, hits):
    counts = paging_json(ostep_file, "--pages", "--frames", "3", "--policy", policy)
    assert counts == {"accesses": 11, "hits": hits, "misses": 11 - hits}
    # Page numbers are never shifted, so the page size does not matter.
    assert paging_json(ostep_file, "--pages", "--frames", "3", "--policy", policy,
                       "--page-size", "2MiB") == counts


def test_policy_names_are_case_insensitive(ostep_file):
    assert paging_json(ostep_file, "--pages", "--frames", "3", "--policy", "FIFO")["hits"] == 4


def test_plain_addresses(tmp_path):
    path = trace_file(tmp_path, ADDR_TRACE)
    # 2 frames, LRU: 1 m, 1 h, 2 m, 3 m (evicts 1), 1 m (evicts 2), 2 m (evicts 3).
    expected = {"accesses": 6, "hits": 1, "misses": 5}
    assert paging_json(path, "--frames", "2", "--policy", "lru") == expected
    assert paging_json(path, "--frames", "2", "--policy", "lru", "--format", "addr") == expected
    # OPT keeps 1 at the miss on 3 (2 is used later than 1): 1 h then, 2 m.
    assert paging_json(path, "--frames", "2", "--policy", "opt")["hits"] == 2


def test_large_pages_change_the_counts(tmp_path):
    path = trace_file(tmp_path, ADDR_TRACE)
    assert paging_json(path, "--frames", "2", "--policy", "fifo", "--page-size", "2MiB") == {
        "accesses": 6, "hits": 5, "misses": 1}


@pytest.mark.parametrize("policy", REPLAY_POLICIES)
def test_lackey_file(tmp_path, policy):
    path = trace_file(tmp_path, LACKEY_TRACE, "prog.lackey")
    expected = counts_of(LACKEY_PAGES, 2, policy)
    assert paging_json(path, "--frames", "2", "--policy", policy) == expected
    assert paging_json(path, "--frames", "2", "--policy", policy, "--format", "lackey") == expected
    # FIFO: 401 m, 402 m, 401 h, 403 m (evicts 401), 401 m, 7ff000 m.
    if policy == "fifo":
        assert expected["hits"] == 1


@pytest.mark.parametrize("policy", REPLAY_POLICIES)
def test_generated_lackey_trace_streams_like_the_whole_array(tmp_path, policy):
    path = tmp_path / "gen.lackey"
    generate_lackey(path, 20_000, seed=5)
    pages, _ = read_page_numbers(path)
    expected = counts_of(pages, 40, policy, seed=3)
    assert paging_json(path, "--frames", "40", "--policy", policy, "--seed", "3") == expected


def test_random_policy_seed(ostep_file, tmp_path):
    path = tmp_path / "gen.lackey"
    generate_lackey(path, 5000, seed=1)
    args = (path, "--frames", "16", "--policy", "random")
    assert paging_json(*args, "--seed", "9") == paging_json(*args, "--seed", "9")
    assert paging_json(*args) == counts_of(read_page_numbers(path)[0], 16, "random", 0)


def test_standard_input():
    text = "\n".join(map(str, OSTEP_PAGES)) + "\n"
    counts = paging_json("-", "--pages", "--frames", "3", "--policy", "opt", input=text)
    assert counts["hits"] == 6


def test_human_output(ostep_file):
    out = ok("paging", ostep_file, "--pages", "--frames", "3", "--policy", "lru")
    assert "3 frames, LRU" in out
    assert "accesses 11  hits 6  misses 5  hit rate 54.55%" in out
    assert "evictions 2" in out


# --- bad input -------------------------------------------------------------------------------


def test_unknown_policy_is_one_line(ostep_file):
    err = user_error("paging", ostep_file, "--pages", "--frames", "3", "--policy", "mru")
    assert "--policy 'mru'" in err
    assert "fifo, lru, clock, random, opt" in err


@pytest.mark.parametrize("frames", ["0", "-3"])
def test_frames_must_be_positive(ostep_file, frames):
    err = user_error("paging", ostep_file, "--pages", "--frames", frames, "--policy", "lru")
    assert "--frames" in err


@pytest.mark.parametrize("policy", ["lru", "opt"])
@pytest.mark.parametrize("text", ["", "# only a comment\n\n"])
def test_empty_trace(tmp_path, text, policy):
    path = trace_file(tmp_path, text, "empty.txt")
    err = user_error("paging", path, "--frames", "3", "--policy", policy)
    assert str(path) in err
    assert "no references" in err


@pytest.mark.parametrize("policy", ["clock", "opt"])
def test_malformed_lines_name_file_and_line(tmp_path, policy):
    path = trace_file(tmp_path, "0x1000\n# fine\n0x2000 oops\n0x3000\n")
    err = user_error("paging", path, "--frames", "2", "--policy", policy)
    assert f"{path}:3" in err
    assert "0x2000 oops" in err
    pages = trace_file(tmp_path, "1\n2\nthree\n", "bad.pages")
    err = user_error("paging", pages, "--pages", "--frames", "2", "--policy", policy)
    assert f"{pages}:3" in err
    lackey = trace_file(tmp_path, "==1== x\nI  00401000,4\n L nothex,8\n", "bad.lackey")
    err = user_error("paging", lackey, "--frames", "2", "--policy", policy)
    assert f"{lackey}:3" in err
    assert "nothex" in err


def test_other_bad_arguments(ostep_file, tmp_path):
    base = ("paging", ostep_file, "--pages", "--frames", "3", "--policy", "random")
    assert "--seed" in user_error(*base, "--seed", "-1")
    assert "--page-size" in user_error(*base, "--page-size", "8KiB")
    assert "--page-size" in user_error(*base, "--page-size", "huge")
    assert "no such file" in user_error("paging", tmp_path / "absent.txt", "--frames", "3",
                                        "--policy", "lru")


def test_missing_required_options_are_usage_errors(ostep_file):
    assert run("paging", ostep_file, "--frames", "3").exit_code == 2
    assert run("paging", ostep_file, "--policy", "lru").exit_code == 2


# --- bench guest -----------------------------------------------------------------------------


def test_bench_guest_json(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = json.loads(ok("bench", "guest", "--refs", "20000", "--lines", "20000", "--json"))
    assert result["paging_refs_per_s"] > 0
    assert result["lackey_lines_per_s"] > 0
    assert result["refs"] == 20000
    assert result["lackey_lines"] == 20000
    assert result["hits"] + result["misses"] == 20000
    assert 0 < result["frames"] == result["footprint_pages"] // 4
    assert list(tmp_path.iterdir()) == []  # the temporary trace is gone


def test_bench_guest_human_and_bad_counts():
    out = ok("bench", "guest", "--refs", "5000", "--lines", "5000")
    assert "paging_refs_per_s" in out
    assert "lackey_lines_per_s" in out
    assert "--refs" in user_error("bench", "guest", "--refs", "0")
    assert "--lines" in user_error("bench", "guest", "--lines", "-1")
