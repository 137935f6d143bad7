"""Recording a real program's memory references under Valgrind's Lackey.

``hvmem trace record --out FILE -- COMMAND...`` runs ``valgrind --tool=lackey
--trace-mem=yes COMMAND`` with Valgrind's log (where Lackey writes its
records) sent to a pipe that hvmem reads, so the program's own output and
input stay on the terminal. What arrives is written to FILE as it comes: a
Lackey trace (``I``, `` L``, `` S``, `` M`` records and Valgrind's ``==``
messages, which the readers skip), read by ``replay`` workloads, ``hvmem
tlb`` and ``hvmem paging``.

Size. Lackey writes about 20 bytes a reference and a program makes 10**8 or
more references a second under it, so a trace grows by a few hundred MB a
second of the program's own time. ``--max-size`` (1 GiB by default) caps the
file: at the cap the program is stopped, the file ends at the last whole
record, and the command says so and exits with status 1, the trace kept.

Progress: one line, rewritten in place on a terminal, a line every 10 s
otherwise: bytes written and records so far.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hvmem.errors import HvmemError

__all__ = ["Recording", "record_trace"]

_READ_BYTES = 1 << 20
_TTY_EVERY_S = 0.5
_LOG_EVERY_S = 10.0
_INSTALL = "install Valgrind (Debian: apt-get install valgrind)"


@dataclass(frozen=True, slots=True)
class Recording:
    """What a recording wrote."""

    path: Path
    size_bytes: int
    records: int  # lines written (records and Valgrind's messages)
    capped: bool  # stopped at --max-size
    exit_status: int  # the program's (under Valgrind)


def _progress(out, size_bytes: int, records: int, *, final: bool, tty: bool) -> None:
    text = f"recording: {size_bytes / (1 << 20):.1f} MiB, {records} records"
    if tty:
        out.write("\r" + text + ("\n" if final else ""))
    else:
        out.write(text + "\n")
    out.flush()


def record_trace(command: list[str], out: Path, *, max_size_bytes: int,
                 valgrind: str | None = None, progress=None) -> Recording:
    """Run ``command`` under Lackey and write its trace to ``out``.

    Args:
        command: the program and its arguments.
        out: the trace file to write (replaced).
        max_size_bytes: the largest trace kept; at the cap the program is stopped.
        valgrind: the valgrind executable (default: found on PATH).
        progress: a text stream for the progress line (None: none).

    Raises:
        HvmemError: no command, no Valgrind, or the program could not start.
    """
    if not command:
        raise HvmemError("trace record: no command given (hvmem trace record --out FILE -- "
                         "COMMAND ...)")
    exe = valgrind or shutil.which("valgrind")
    if exe is None:
        raise HvmemError(f"trace record: valgrind not found: {_INSTALL}")
    read_fd, write_fd = os.pipe()
    argv = [exe, "--tool=lackey", "--trace-mem=yes", f"--log-fd={write_fd}", *command]
    try:
        proc = subprocess.Popen(argv, pass_fds=(write_fd,), start_new_session=True)
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        raise HvmemError(f"trace record: cannot run {exe}: {exc.strerror or exc}") from None
    os.close(write_fd)
    tty = progress is not None and progress.isatty()
    every = _TTY_EVERY_S if tty else _LOG_EVERY_S
    written = records = 0
    capped = False
    last = time.monotonic()
    try:
        with open(out, "wb") as fh, os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(_READ_BYTES)
                if not chunk:
                    break
                if written + len(chunk) > max_size_bytes:
                    room = chunk[: max_size_bytes - written]
                    chunk = room[: room.rfind(b"\n") + 1]  # whole records only
                    capped = True
                fh.write(chunk)
                written += len(chunk)
                records += chunk.count(b"\n")
                if capped:
                    break
                now = time.monotonic()
                if progress is not None and now - last >= every:
                    _progress(progress, written, records, final=False, tty=tty)
                    last = now
    finally:
        if capped or sys.exc_info()[0] is not None:
            with contextlib.suppress(ProcessLookupError):  # it ended on its own meanwhile
                os.killpg(proc.pid, signal.SIGKILL)
        status = proc.wait()
    if progress is not None:
        _progress(progress, written, records, final=True, tty=tty)
    return Recording(out, written, records, capped, status)
