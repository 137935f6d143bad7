"""Citations resolve: every source key the code cites is defined in docs/references.md.

A citation is a bracket pair holding one or more source keys, each with optional
locators, as the grammar below spells out::

    [OSDI02]  [OSDI02 §5.3]  [OSDI02 §5.1, §6.1]  [OSDI02 §5.1-5.2]  [OSDI02 Fig. 8]
    [ESX25-p341]  [VS41-ZIP, VS65-ZIP, VMAESTRO-ZIP]  [VS4-ATTR][LAMW]

Where citations are looked for: comments and string literals of every module
under src/ (a bracket may run over several lines of a docstring or of a comment
block), the shipped TOML files under src/, docs/*.md other than references.md,
and README.md. Code spans (backquoted) and Markdown links are not prose and are
skipped. A bracket is *meant as a citation* when its text starts with a
capitalised word of at least two letters or digits followed by a space, comma,
semicolon, hyphen or the closing bracket; an underscore after it makes it a
Python name (``counts[A_SHARE]``), a single capital a regex class (``[A-Z]``).
Such a bracket must parse with the grammar, so a free-form citation such as
``[Waldspurger 2002]`` fails instead of slipping through.

docs/references.md defines each key in a heading ``### [KEY]`` followed by the
fields listed in :data:`ENTRY_FIELDS`. Every key cited must be defined there,
and every key defined there must be cited somewhere, unless its entry sits under
the ``## Background`` heading (sources the code names in prose, kept so that
those mentions can become keys).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
DOCS = ROOT / "docs"
REFERENCES = DOCS / "references.md"

# --- the grammar -------------------------------------------------------------------------------

#: A source key: a capital, then capitals or digits (two characters at least), then
#: hyphenated parts that may use lower case (``YB-STATES6``, ``ESX25-p341``, ``VS4-ATTR``).
KEY = r"[A-Z][A-Z0-9]+(?:-[A-Za-z0-9]+)*"
#: Where in the source: a section or a range of sections, a figure, a table, a
#: footnote or a page (``§5.3``, ``§5.1-5.2``, ``Fig. 8``, ``Table B-2``, ``footnote 3``).
LOCATOR = (
    r"(?:§\d+(?:\.\d+)*(?:-\d+(?:\.\d+)*)?"
    r"|Fig\. \d+[a-z]?"
    r"|Table [A-Z]?-?\d+"
    r"|footnote \d+"
    r"|p\. \d+)"
)
#: One key with its locators, comma-separated (``OSDI02 §5.1, §6.1``).
CITATION = rf"{KEY}(?: {LOCATOR}(?:, {LOCATOR})*)?"
#: The whole text between the brackets: citations separated by commas or semicolons.
BRACKET_TEXT = re.compile(rf"{CITATION}(?:[,;] {CITATION})*")
#: Text in brackets that is meant as a citation (see the module docstring).
MEANT_AS_CITATION = re.compile(r"[A-Z][A-Za-z0-9]+(?=[\s,;\-]|$)")

# Bracketed text, possibly over several lines; the length cap keeps a stray "[" in
# prose from swallowing a paragraph.
BRACKET = re.compile(r"\[([^\[\]]{1,300})\]")
CODE_SPAN = re.compile(r"``.*?``|`[^`\n]*`", re.S)
MARKDOWN_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
MARKDOWN_LINK = re.compile(r"\[[^\[\]]*\](?=[(\[:])")

#: Fields every entry of docs/references.md has, in this order.
ENTRY_FIELDS = ("By", "Title", "Year", "Where", "hvmem takes")

def parse_bracket(text: str) -> list[str] | None:
    """The keys cited by one bracket's text, or None if the text does not parse."""
    text = " ".join(text.split())
    if not BRACKET_TEXT.fullmatch(text):
        return None
    return re.findall(rf"(?:^|[,;] )({KEY})", text)


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        ("OSDI02", ["OSDI02"]),
        ("OSDI02 §5.3", ["OSDI02"]),
        ("OSDI02 §5.1, §6.1", ["OSDI02"]),
        ("OSDI02 §5.1-5.2", ["OSDI02"]),
        ("OSDI02 Fig. 8", ["OSDI02"]),
        ("OSDI02 footnote 3", ["OSDI02"]),
        ("ESX25-p341", ["ESX25-p341"]),
        ("VS41-ZIP,\n    VS65-ZIP, VMAESTRO-ZIP", ["VS41-ZIP", "VS65-ZIP", "VMAESTRO-ZIP"]),
        ("OSDI02 §6.3; YB-STATES6", ["OSDI02", "YB-STATES6"]),
        ("Waldspurger 2002", None),
        ("OSDI02 section 5", None),
        ("OSDI02,LAMW", None),
        ("Osdi02", None),
        ("OSDI02 §", None),
    ],
)
def test_the_grammar(text: str, keys: list[str] | None) -> None:
    assert parse_bracket(text) == keys


@pytest.mark.parametrize(
    ("text", "meant"),
    [
        ("OSDI02 §5.3", True),
        ("LAMW", True),
        ("Magenheimer 2013", True),
        ("A_SHARE", False),
        ("STEP_INDEX", False),
        ("A-Za-z0-9", False),
        ("0, 1", False),
        ("vm.workload", False),
    ],
)
def test_what_is_meant_as_a_citation(text: str, meant: bool) -> None:
    assert bool(MEANT_AS_CITATION.match(text)) is meant


# --- where citations are -----------------------------------------------------------------------


@dataclass(frozen=True)
class Bracket:
    """One bracket meant as a citation, and where it is."""

    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: [{self.text}]"


def _python_prose(source: str) -> Iterator[tuple[int, str]]:
    """(first line, text) of each string literal and each block of adjacent comments."""
    block: list[str] = []
    block_start = block_end = 0
    prose_tokens = {tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#:").strip()
            if block and tok.start[0] == block_end + 1:
                block.append(text)
            else:
                if block:
                    yield block_start, "\n".join(block)
                block, block_start = [text], tok.start[0]
            block_end = tok.start[0]
        elif tok.type in prose_tokens:
            yield tok.start[0], tok.string
    if block:
        yield block_start, "\n".join(block)


def _blank_out(pattern: re.Pattern[str], text: str) -> str:
    """Text with every match of pattern replaced by spaces, newlines kept (lines stay put)."""
    return pattern.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def _brackets_in(path: Path, first_line: int, text: str) -> Iterator[Bracket]:
    text = _blank_out(CODE_SPAN, text)
    for m in BRACKET.finditer(text):
        inner = m.group(1)
        if MEANT_AS_CITATION.match(inner):
            line = first_line + text.count("\n", 0, m.start())
            yield Bracket(str(path.relative_to(ROOT)), line, " ".join(inner.split()))


def cited_files() -> list[Path]:
    """Files whose citations must resolve: src/ (modules, TOML), docs/*.md, README.md."""
    files = sorted(SRC.rglob("*.py")) + sorted(SRC.rglob("*.toml"))
    files += [p for p in sorted(DOCS.glob("*.md")) if p != REFERENCES]
    files.append(ROOT / "README.md")
    return [p for p in files if "__pycache__" not in p.parts]


def citation_brackets() -> list[Bracket]:
    """Every bracket meant as a citation, in src/, docs/ and README.md."""
    found: list[Bracket] = []
    for path in cited_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            for line, prose in _python_prose(text):
                found.extend(_brackets_in(path, line, prose))
        else:
            if path.suffix == ".md":
                text = _blank_out(MARKDOWN_FENCE, text)
                text = _blank_out(MARKDOWN_LINK, text)
            found.extend(_brackets_in(path, 1, text))
    return found


def cited_keys() -> dict[str, list[Bracket]]:
    """Each key cited, with the brackets that cite it (brackets that do not parse left out)."""
    keys: dict[str, list[Bracket]] = {}
    for bracket in citation_brackets():
        for key in parse_bracket(bracket.text) or []:
            keys.setdefault(key, []).append(bracket)
    return keys


# --- what docs/references.md defines -----------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One definition in docs/references.md."""

    key: str
    line: int
    background: bool
    body: str


def reference_entries() -> list[Entry]:
    """The entries of docs/references.md, in order."""
    entries: list[Entry] = []
    background = False
    current: tuple[str, int] | None = None
    body: list[str] = []

    def close() -> None:
        if current is not None:
            entries.append(Entry(current[0], current[1], background, "\n".join(body)))

    for number, line in enumerate(REFERENCES.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("## "):
            close()
            current, body = None, []
            background = line[3:].strip() == "Background"
        elif line.startswith("### "):
            close()
            heading = line[4:].strip()
            m = re.fullmatch(rf"\[({KEY})\]", heading)
            assert m, f"docs/references.md:{number}: entry heading is not [KEY]: {heading!r}"
            current, body = (m.group(1), number), []
        elif current is not None:
            body.append(line)
    close()
    return entries


# --- the checks --------------------------------------------------------------------------------


def test_references_document_exists_and_defines_keys() -> None:
    assert REFERENCES.is_file()
    assert len(reference_entries()) > 40


def test_every_citation_parses() -> None:
    bad = [str(b) for b in citation_brackets() if parse_bracket(b.text) is None]
    assert not bad, "citations that do not parse as [KEY ...]:\n" + "\n".join(bad)


def test_every_cited_key_is_defined() -> None:
    defined = {e.key for e in reference_entries()}
    missing = [
        f"{key}, cited at {brackets[0]}"
        + (f" and {len(brackets) - 1} more" if brackets[1:] else "")
        for key, brackets in sorted(cited_keys().items())
        if key not in defined
    ]
    assert not missing, "keys not defined in docs/references.md:\n" + "\n".join(missing)


def test_every_defined_key_is_cited_or_background() -> None:
    cited = cited_keys()
    unused = [
        f"docs/references.md:{e.line}: [{e.key}]"
        for e in reference_entries()
        if not e.background and e.key not in cited
    ]
    assert not unused, (
        "defined but never cited (cite it, or move it under ## Background):\n" + "\n".join(unused)
    )


def test_each_key_is_defined_once() -> None:
    seen: dict[str, int] = {}
    twice = []
    for e in reference_entries():
        if e.key in seen:
            twice.append(f"[{e.key}] at lines {seen[e.key]} and {e.line}")
        seen[e.key] = e.line
    assert not twice, "keys defined twice:\n" + "\n".join(twice)


def test_every_entry_has_its_fields() -> None:
    incomplete = []
    for e in reference_entries():
        fields = re.findall(r"^- \*\*(.+?):\*\* \S", e.body, re.M)
        if tuple(fields) != ENTRY_FIELDS:
            incomplete.append(f"docs/references.md:{e.line}: [{e.key}] has {fields}")
    assert not incomplete, (
        f"entries without the fields {ENTRY_FIELDS} in that order:\n" + "\n".join(incomplete)
    )


def test_modules_named_in_references_exist() -> None:
    """A module a reference says it serves (``policy/states.py``) is there to read."""
    package = SRC / "hvmem"
    names = set(re.findall(r"`([a-z_][a-z0-9_/]*\.py)`", REFERENCES.read_text(encoding="utf-8")))
    def exists(name: str) -> bool:
        if name.startswith("tests/"):
            return (ROOT / name).is_file()
        return (package / name).is_file() if "/" in name else any(package.rglob(name))

    missing = sorted(name for name in names if not exists(name))
    assert not missing, "docs/references.md names modules src/hvmem lacks:\n" + "\n".join(missing)


# --- pointers to files that do not ship --------------------------------------------------------

#: Research notes and design files kept outside the repository. Sources must be cited
#: by key (docs/references.md) and the design described in docs/architecture.md.
OUTSIDE_FILES = ("esx-memory.md", "peers.md", "qemu-feasibility.md", "performance.md",
                 "style-anchors.md", "DESIGN.md", "../shared")


@pytest.mark.parametrize("name", OUTSIDE_FILES)
def test_src_points_at_no_file_outside_the_repository(name: str) -> None:
    hits = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted(SRC.rglob("*.py")) + sorted(SRC.rglob("*.toml"))
        if "__pycache__" not in path.parts
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if name in line
    ]
    assert not hits, f"{name} is not in the repository; point at docs/ instead:\n" + "\n".join(hits)
