"""How an hvmem command ends: its exit status, and an error as one line on stderr.

Exit statuses (after HTTPie's ``ExitStatus``)::

    0    done
    1    an error in what the user gave or in what the host allows: a value, a
         file, a guest that is not there. ``hvmem: error: ...`` on stderr, one
         line that names the file, field or value, never a traceback
    2    a usage error (an unknown flag, a missing argument), reported by Click
    129  stopped by SIGHUP (a closed terminal)
    130  stopped by SIGINT (Ctrl-C)
    143  stopped by SIGTERM (``timeout``, systemd, Slurm, ``docker stop``)

A run stopped by any of the three signals, or by an error in its middle,
keeps what it simulated: the results directory is written, marked incomplete
with the reason, and then the command exits with the status above (128 + the
signal's number, as a shell reports it [BASH-EXIT]) or 1 for the error. While the results
are being written a further signal is held back, so the directory is whole.

The errors made one line are hvmem's own (:class:`~hvmem.errors.HvmemError`:
``ConfigError``, ``TraceError``, ``BackendError``, ...) and the operating
system's (:class:`OSError`: a file that cannot be read or written, a socket
that refuses), named by the file they concern. Every command of ``hvmem`` and
``hvmem qemu`` is wrapped in :func:`user_errors`, which also ends a command
that a signal stopped outside a run (``hvmem: stopped by SIGTERM``, 143).
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Callable, Iterator
from enum import IntEnum
from typing import Any

import typer

from hvmem.errors import HvmemError


class ExitStatus(IntEnum):
    """The exit status of an ``hvmem`` command."""

    OK = 0
    ERROR = 1  # a bad value, file or host: one line on stderr
    USAGE = 2  # Click's usage errors
    HANGUP = 129  # 128 + SIGHUP
    INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C
    TERMINATED = 143  # 128 + SIGTERM


#: The signals that stop a run and keep its results.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(KeyboardInterrupt):
    """A run stopped by a signal; a ``KeyboardInterrupt``, so a run treats it as Ctrl-C.

    ``str()`` is the reason the results record, ``stopped by SIGTERM``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process a signal ended."""
        return 128 + self.signum


def status_of_stop(reason: str) -> int | None:
    """The exit status of a stop reason ``stopped by SIGTERM``; None for other reasons."""
    if reason == "interrupted":  # a KeyboardInterrupt that named no signal: Ctrl-C
        return ExitStatus.INTERRUPTED
    name = reason.removeprefix("stopped by ").strip()
    if not reason.startswith("stopped by ") or name not in signal.Signals.__members__:
        return None
    return 128 + signal.Signals[name]


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread while installed.

    ``received`` is the first such signal. Inside :meth:`held` (writing results)
    a signal is only remembered, so the files are finished; the caller then
    exits with the status of ``received``. Install with ``with``; the handlers
    before are put back on leaving.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self._holding = False
        self._old: dict[int, object] = {}

    @property
    def installed(self) -> bool:
        """Whether the handlers are in place."""
        return bool(self._old)

    def _handler(self, signum: int, _frame: object) -> None:
        if self.received is None:
            self.received = signum
        if not self._holding:
            raise Stopped(signum)

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old.clear()

    def hold(self) -> None:
        """From now on a signal is remembered, not raised (until :meth:`release`)."""
        self._holding = True

    def release(self) -> None:
        """Signals raise :class:`Stopped` again."""
        self._holding = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Signals are remembered, not raised, inside this block."""
        self.hold()
        try:
            yield
        finally:
            self.release()

    def check(self) -> None:
        """Raise :class:`Stopped` if a signal came and is not held; a run calls it every tick.

        The handler's exception is lost when it lands inside a finalizer (a
        ``__del__``, a weakref callback: Python prints "Exception ignored" and
        goes on), and the run would go on to its end. The flag it set is not
        lost: checked at the next tick, the signal still stops the run.
        """
        if self.received is not None and not self._holding:
            raise Stopped(self.received)

    def raise_if_stopped(self) -> None:
        """Release held signals, and raise :class:`Stopped` if one came meanwhile."""
        self.release()
        if self.received is not None:
            raise Stopped(self.received)

    def exit_if_stopped(self) -> None:
        """Exit with 128 + the signal's number if one was received."""
        if self.received is not None:
            raise typer.Exit(128 + self.received)


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
        except Stopped as stop:  # before a run began or after its results: nothing to keep
            typer.echo(f"hvmem: {stop}", err=True)
            raise typer.Exit(stop.exit_status) from None

    return wrapper


#: The process's stop signals, installed by ``hvmem``'s entry point (``ui/cli.py``
#: ``main``) before any command runs; a command that writes results holds them
#: from its first line, so a signal while it prepares still leaves its results.
STOPS = StopSignals()
