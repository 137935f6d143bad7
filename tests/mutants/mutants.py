"""Mutation testing from a list: plant one small bug at a time, expect the tests to fail.

Each mutant in ``tests/mutants/mutants.toml`` names a file under ``src/``, an exact piece of
its text (which must occur exactly once), what to put in its place, and the tests
that should catch it. For each mutant this script copies ``src/`` and ``tests/`` to
a scratch directory, plants the bug there (never in the working tree), runs the
named tests against the copy and records the outcome:

``killed``
    a test failed, as it should;
``SURVIVED``
    every test passed with the bug in place: the suite does not see it;
``stale``
    the text to replace is no longer in the file (or occurs more than once): the
    mutant must be updated to the code as it now is;
``error``
    the copy could not be tested at all (collection error, time-out).

A list rather than a generating tool (mutmut and the like) because the bugs worth
planting here are semantic (a missed copy-on-write, a state left at ``>=``), and
because most of the hot code is Numba kernels, which such tools neither parse nor
reload. Run it with ``make mutants`` (outside ``make test``: each mutant costs a
Numba recompilation and a test run, a few minutes in all); ``--only ID`` runs one,
``--json`` prints the table as JSON. The exit status is 1 when any mutant
survived or went stale.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIST = Path(__file__).resolve().parent / "mutants.toml"
#: Longest a mutant's test run may take before it counts as an error, by default
#: (``--timeout``): the slowest kill took 410 s on an idle machine, and more than
#: three times that with the two cores shared.
TIMEOUT_S = 900


@dataclass(frozen=True)
class Mutant:
    """One planted bug: replace ``old`` (exactly one occurrence) in ``file`` by ``new``."""

    id: str
    description: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]


def load_mutants(path: Path = LIST) -> list[Mutant]:
    """The mutants listed in ``path``, checked for the fields each must have."""
    with open(path, "rb") as handle:
        doc = tomllib.load(handle)
    mutants = []
    for i, entry in enumerate(doc.get("mutant", [])):
        missing = {"id", "description", "file", "old", "new", "tests"} - set(entry)
        if missing:
            raise SystemExit(f"{path}: mutant[{i}]: missing {', '.join(sorted(missing))}")
        mutants.append(Mutant(entry["id"], entry["description"], entry["file"], entry["old"],
                              entry["new"], tuple(entry["tests"])))
    ids = [m.id for m in mutants]
    if len(ids) != len(set(ids)):
        raise SystemExit(f"{path}: mutant ids repeat")
    return mutants


def run_mutant(mutant: Mutant, scratch: Path, python: str,
               timeout_s: float = TIMEOUT_S) -> tuple[str, float, str]:
    """(outcome, seconds, last line of the test output) of one mutant in ``scratch``."""
    target = scratch / mutant.file
    original = target.read_text()
    if original.count(mutant.old) != 1:
        found = original.count(mutant.old)
        return "stale", 0.0, f"text to replace found {found} times in {mutant.file}"
    target.write_text(original.replace(mutant.old, mutant.new))
    env = dict(os.environ, PYTHONPATH=str(scratch / "src"), HVMEM_QEMU_TESTS="0",
               NUMBA_CACHE_DIR=str(scratch / ".numba-cache"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("HVMEM_UPDATE_GOLDEN", None)
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--rootdir",
             str(scratch), "-c", str(scratch / "pyproject.toml"), *mutant.tests],
            cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "error", time.monotonic() - start, f"time-out after {timeout_s:g} s (--timeout)"
    finally:
        target.write_text(original)
    seconds = time.monotonic() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    last = lines[-1] if lines else proc.stderr.strip().splitlines()[-1:]
    if proc.returncode == 1:
        return "killed", seconds, str(last)
    if proc.returncode == 0:
        return "SURVIVED", seconds, str(last)
    return "error", seconds, f"pytest exit {proc.returncode}: {last}"


def main(argv: list[str] | None = None) -> int:
    """Run the listed mutants and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--only", action="append", default=[], metavar="ID",
                        help="run only this mutant (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the table as JSON")
    parser.add_argument("--list", type=Path, default=LIST, help="the mutant list (TOML)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, metavar="SECONDS",
                        help=f"longest a mutant's tests may run (default {TIMEOUT_S})")
    args = parser.parse_args(argv)
    mutants = load_mutants(args.list)
    if args.only:
        unknown = set(args.only) - {m.id for m in mutants}
        if unknown:
            raise SystemExit(f"unknown mutant: {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.id in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="hvmem-mutants-") as tmp:
        scratch = Path(tmp)
        ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc", ".hypothesis")
        for part in ("src", "tests"):
            shutil.copytree(ROOT / part, scratch / part, ignore=ignore, symlinks=True)
        shutil.copy2(ROOT / "pyproject.toml", scratch / "pyproject.toml")
        for mutant in mutants:
            outcome, seconds, detail = run_mutant(mutant, scratch, sys.executable, args.timeout)
            rows.append({"id": mutant.id, "outcome": outcome, "seconds": round(seconds, 1),
                         "description": mutant.description, "detail": detail})
            if not args.json:
                print(f"{mutant.id:28s} {outcome:9s} {seconds:6.1f} s  {mutant.description}",
                      flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        killed = sum(r["outcome"] == "killed" for r in rows)
        print(f"{killed} of {len(rows)} mutants killed")
    return 0 if all(r["outcome"] == "killed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
