"""A blocking QMP client with a timeout on every call, over the ``qemu.qmp`` library.

What it does
------------
QMP (the QEMU Machine Protocol) is JSON over a unix socket: QEMU greets, the
client sends ``qmp_capabilities``, then commands and their answers alternate,
with asynchronous events in between. ``qemu.qmp`` (QEMU's own Python package,
PyPI ``qemu.qmp``) speaks it with asyncio; the controller is a plain loop, so
:class:`QmpClient` owns a private event loop and runs each call to completion
under :func:`asyncio.wait_for`. Nothing here ever waits without a bound:

* connecting (socket, greeting, capabilities negotiation) and every command
  have a timeout (2 s by default; the socket accepts after 0.06 s and balloon
  commands answer at once [QEMU-PROBE]);
* a timeout or a broken connection drops the connection; the next call
  reconnects, and :meth:`QmpClient.call` retries once on a fresh connection
  before giving up;
* the failure is typed: :class:`QmpGone` when nothing listens any more (the
  socket file is gone or refuses connections: the guest died),
  :class:`QmpTimeout` when QEMU does not answer in time (hung, or stopped with
  SIGSTOP), :class:`QmpStalled` (a timeout) when the caller's check says the
  QEMU process is stopped, so no connection is even tried,
  :class:`QmpCommandError` when QEMU answers with an error.

A stopped QEMU is not a dead one. QEMU's QMP socket accepts one client at a
time and queues at most one more: while QEMU is stopped the kernel queues a new
connection without QEMU ever greeting it, and once that queue is full a connect
fails at once (EINVAL on this kind of host, EAGAIN elsewhere) [QEMU-PROBE].
Only a refused connection or a missing socket file means the guest is gone;
any other connect error is a timeout. Every abandoned connection is closed at
the socket (``transport.abort()``), not only asked to close, so a stalled QEMU
finds no pile of dead clients when it runs again; and with ``stalled`` given,
the client does not connect (nor retry) while the process is stopped, so
nothing is queued at all.

All three are :class:`~hvmem.errors.BackendError`, so the command line prints
them as one line. ``qemu.qmp`` logs connection failures on its own loggers;
they are silenced here because the backend reports each failure itself
(``disconnect()`` after a lost connection raises ``EOFError``, which
[QEMU-PROBE] saw too, and is ignored).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from qemu.qmp import ExecuteError, QMPClient

from hvmem.errors import BackendError

__all__ = ["DEFAULT_TIMEOUT_S", "QmpClient", "QmpCommandError", "QmpGone", "QmpStalled",
           "QmpTimeout"]

#: Bound on connecting and on every command, in seconds.
DEFAULT_TIMEOUT_S = 2.0

logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())
logging.getLogger("qemu.qmp").propagate = False


class QmpGone(BackendError):
    """Nothing answers on the QMP socket any more: the socket is gone or refuses."""


class QmpTimeout(BackendError):
    """QEMU did not answer within the timeout."""


class QmpStalled(QmpTimeout):
    """The QEMU process is stopped (SIGSTOP): no connection was tried."""


class QmpCommandError(BackendError):
    """QEMU answered a command with an error."""


class QmpClient:
    """One QMP connection to one QEMU, used synchronously.

    Args:
        path: the QMP unix socket.
        timeout_s: bound on connecting and on each command.
        name: used in error messages (the VM's name).
        stalled: a check run before connecting and before a retry: True when the
            QEMU process is stopped (procfs.py ``process_state``), so the client
            raises :class:`QmpStalled` instead of queuing a connection.

    Attributes:
        calls: commands that got an answer (an event count).
        timeouts: calls that timed out.
        reconnects: connections opened after the first.
    """

    def __init__(self, path: str | Path, timeout_s: float = DEFAULT_TIMEOUT_S,
                 name: str | None = None,
                 stalled: Callable[[], bool] | None = None) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise BackendError(f"QMP timeout must be positive, found {timeout_s}")
        self.path = Path(path)
        self.timeout_s = float(timeout_s)
        self.name = name or self.path.name
        self.stalled = stalled
        self._loop = asyncio.new_event_loop()
        self._client: QMPClient | None = None
        self._connected_once = False
        self.calls = 0
        self.timeouts = 0
        self.reconnects = 0

    # -- plumbing ----------------------------------------------------------------------
    def _run(self, coro: Coroutine[Any, Any, Any], timeout_s: float) -> Any:
        return self._loop.run_until_complete(asyncio.wait_for(coro, timeout_s))

    def _drop(self) -> None:
        """Forget the connection (after a failure); errors while closing are moot."""
        client, self._client = self._client, None
        if client is None:
            return
        # The connection is broken either way; errors while closing it are moot.
        with contextlib.suppress(Exception, asyncio.CancelledError):
            self._run(client.disconnect(), self.timeout_s)
        _abort(client)

    def _connect(self) -> QMPClient:
        if self._client is not None:
            return self._client
        if not self.path.exists():
            raise QmpGone(f"{self.name}: QMP socket {self.path} does not exist (guest gone?)")
        self._check_stalled()
        client = QMPClient(self.name)
        # Events (BALLOON_CHANGE, up to one a second) are not used: the default listener
        # refuses them, so they are dropped instead of queuing up while the loop runs.
        client.events.event_filter = _no_events
        try:
            self._run(client.connect(str(self.path)), self.timeout_s)
        except TimeoutError:
            self.timeouts += 1
            self._client = client
            self._drop()
            raise QmpTimeout(f"{self.name}: no QMP greeting on {self.path} within "
                             f"{self.timeout_s:g} s") from None
        except Exception as err:
            cause = err.__cause__ or err
            with contextlib.suppress(Exception):  # nothing to close after a failed connect
                self._run(client.disconnect(), self.timeout_s)
            _abort(client)
            if isinstance(cause, ConnectionRefusedError | FileNotFoundError):
                raise QmpGone(f"{self.name}: cannot connect to QMP socket {self.path} "
                              f"({_describe(cause)})") from None
            # The socket is there and its queue is full: QEMU is not accepting (stopped
            # or busy), which is no answer yet, not a death.
            self.timeouts += 1
            raise QmpTimeout(f"{self.name}: QMP socket {self.path} does not accept "
                             f"connections ({_describe(cause)}): QEMU stopped or "
                             "busy") from None
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        self._client = client
        return client

    def _check_stalled(self) -> None:
        if self.stalled is not None and self.stalled():
            raise QmpStalled(f"{self.name}: QEMU is stopped; QMP not tried")

    # -- calls -------------------------------------------------------------------------
    def call_once(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run one command on the current (or a new) connection; no retry.

        Raises:
            QmpGone, QmpTimeout, QmpCommandError: see the module docs.
        """
        client = self._connect()
        try:
            result = self._run(client.execute(command, arguments), self.timeout_s)
        except TimeoutError:
            self.timeouts += 1
            self._drop()
            raise QmpTimeout(f"{self.name}: QMP {command} got no answer within "
                             f"{self.timeout_s:g} s") from None
        except ExecuteError as err:
            raise QmpCommandError(f"{self.name}: QMP {command} failed: "
                                  f"{err.error.error.desc}") from None
        except Exception as err:
            self._drop()
            raise QmpGone(f"{self.name}: QMP connection lost during {command} "
                          f"({_describe(err)})") from None
        self.calls += 1
        return result

    def call(self, command: str, arguments: dict[str, Any] | None = None,
             retries: int = 1) -> Any:
        """Run one command, retrying on a fresh connection after a timeout or a lost one.

        A :class:`QmpCommandError` is QEMU's answer and is not retried; a socket
        that is gone is not retried either (nothing would answer).
        """
        for attempt in range(retries + 1):
            try:
                return self.call_once(command, arguments)
            except QmpStalled:
                raise
            except QmpTimeout:
                if attempt == retries:
                    raise
                self._check_stalled()  # stopped while waiting: queue no connection
            except QmpGone:
                if attempt == retries or not self.path.exists():
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Disconnect and release the event loop."""
        self._drop()
        self._loop.close()

    def __enter__(self) -> QmpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _abort(client: QMPClient) -> None:
    """Close the connection's socket now, whatever state the protocol is in."""
    writer = getattr(client, "_writer", None)
    transport = getattr(writer, "transport", None)
    if transport is not None:
        with contextlib.suppress(Exception):
            transport.abort()


def _no_events(_event: object) -> bool:
    return False


def _describe(err: BaseException) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return str(err) or type(err).__name__
