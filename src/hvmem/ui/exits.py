"""How an hvmem command ends: its exit status, and an error as one line on stderr.

Exit statuses (after HTTPie's ``ExitStatus``)::

    0    done
    1    an error in what the user gave or in what the host allows: a value, a
         file, a guest that is not there. ``hvmem: error: ...`` on stderr, one
         line that names the file, field or value, never a traceback
    2    a usage error (an unknown flag, a missing argument), reported by Click
    130  interrupted (Ctrl-C outside a run; a run keeps what it simulated)

The errors made one line are hvmem's own (:class:`~hvmem.errors.HvmemError`:
``ConfigError``, ``TraceError``, ``BackendError``, ...) and the operating
system's (:class:`OSError`: a file that cannot be read or written, a socket
that refuses), named by the file they concern. Every command of ``hvmem`` and
``hvmem qemu`` is wrapped in :func:`user_errors`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from enum import IntEnum
from typing import Any

import typer

from hvmem.errors import HvmemError


class ExitStatus(IntEnum):
    """The exit status of an ``hvmem`` command."""

    OK = 0
    ERROR = 1  # a bad value, file or host: one line on stderr
    USAGE = 2  # Click's usage errors
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def error_line(err: HvmemError | OSError) -> str:
    """The one line an error is reported as, ``hvmem: error: ...``."""
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename is not None else ""
        return f"hvmem: error: {where}{err.strerror}"
    return f"hvmem: error: {err}"


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command: hvmem's and the OS's errors end it with one line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (HvmemError, OSError) as err:
            typer.echo(error_line(err), err=True)
            raise typer.Exit(ExitStatus.ERROR) from None

    return wrapper
