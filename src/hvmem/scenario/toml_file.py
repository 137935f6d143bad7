"""Reading a TOML file a user names: whatever it holds, a document or one ConfigError line.

Scenario files and machine files come from people and from other programs, so
the file itself can be wrong before any field is: a directory, a device that
never ends (``/dev/zero``), a file in another encoding, a document nested
thousands of levels deep. Each of those ends here in one
:class:`~hvmem.errors.ConfigError` naming the file and what to do, never in a
traceback from deeper down (``tomllib``'s recursion, Python's digit limit on
integers, a ``repr`` of a value nested too deeply to print).

What is accepted:

* at most :data:`MAX_FILE_BYTES` (1 MiB; the largest shipped scenario is 5 KiB,
  so a larger file is not a scenario someone wrote);
* UTF-8, as TOML requires, with or without a byte-order mark (editors on
  Windows write one; it is dropped). UTF-16 and UTF-32 are recognised by their
  mark and named, so the message says how to convert, not which byte failed;
* values nested at most :data:`MAX_DEPTH` tables or arrays deep (a scenario
  needs 5: ``vm[0].workload.phases[1].base``).

Paths in messages are shortened to :data:`MAX_SHOWN_CHARS` characters
(:func:`show_path`): an error about a name of 5000 characters stays one line
that fits a screen.
"""

from __future__ import annotations

import codecs
import os
import stat
import tomllib
from typing import Any

from hvmem.errors import ConfigError

__all__ = ["MAX_DEPTH", "MAX_FILE_BYTES", "MAX_SHOWN_CHARS", "depth_of", "parse_toml_text",
           "read_toml", "show_path"]

#: The largest TOML file read, in bytes.
MAX_FILE_BYTES = 1 << 20
#: The deepest nesting of tables and arrays a document may have.
MAX_DEPTH = 32
#: The longest path shown in a message; longer ones keep their start and end.
MAX_SHOWN_CHARS = 120

# Byte-order marks of the encodings a TOML file must not be in, longest first
# (UTF-32 LE starts with UTF-16 LE's mark).
_OTHER_ENCODINGS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def show_path(path: str | os.PathLike[str]) -> str:
    """A path for a message: as it is, or its start and end around '...' if it is long."""
    text = os.fspath(path)
    if len(text) <= MAX_SHOWN_CHARS:
        return text
    keep = (MAX_SHOWN_CHARS - 3) // 2
    return f"{text[:keep]}...{text[-keep:]}"


def read_toml(path: str | os.PathLike[str], what: str = "TOML file") -> dict[str, Any]:
    """The document of the TOML file at ``path``.

    Args:
        path: the file.
        what: what the file should be, for messages ("scenario file").

    Raises:
        ConfigError: one line naming the file: missing, unreadable, a directory
            or device, too large, not UTF-8, not TOML, or nested too deeply.
    """
    file = show_path(path)
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if stat.S_ISDIR(mode):
                raise ConfigError(f"{file}: is a directory, not a {what}")
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{file}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{file}: is a directory, not a {what}") from None
    except OSError as err:
        raise ConfigError(f"{file}: cannot read it: {err.strerror or err}") from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"{file}: larger than {MAX_FILE_BYTES >> 20} MiB, too large for a "
                          f"{what}")
    return parse_toml_text(_decode(data, file), file)


def _decode(data: bytes, file: str) -> str:
    for mark, name in _OTHER_ENCODINGS:
        if data.startswith(mark):
            raise ConfigError(f"{file}: is {name} text; TOML files are UTF-8 (save it as "
                              "UTF-8)")
    try:
        return data.decode("utf-8-sig")  # a UTF-8 byte-order mark is dropped
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{file}: not UTF-8 text (byte {data[err.start]:#04x} at line "
                          f"{line}, column {column}); TOML files are UTF-8 (save it as "
                          "UTF-8)") from None


def parse_toml_text(text: str, file: str = "<toml>") -> dict[str, Any]:
    """The document of TOML ``text`` (``file`` names it in messages), depth checked.

    Raises:
        ConfigError: not valid TOML, an integer of more digits than Python
            converts, or values nested more than :data:`MAX_DEPTH` deep.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{file}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{file}: not valid TOML: nested too deeply (more than "
                          f"{MAX_DEPTH} levels of arrays or tables)") from None
    except ValueError as err:  # an integer literal of thousands of digits
        raise ConfigError(f"{file}: not valid TOML: {str(err).split(';')[0]}") from None
    if depth_of(doc) > MAX_DEPTH:
        raise ConfigError(f"{file}: nested too deeply (more than {MAX_DEPTH} levels of arrays "
                          "or tables)")
    return doc


def depth_of(value: Any) -> int:
    """How many tables and arrays deep ``value`` is (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest
