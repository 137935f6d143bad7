"""A libvirt connection: the optional ``libvirt`` module, opening a URI, the host's memory.

Why optional
------------
libvirt's Python binding is a C extension over ``libvirt.so``. The PyPI package
builds it from source against ``libvirt-dev``; Debian's ``python3-libvirt`` ships
it built, and ``make setup`` links its two files (``libvirt.py`` and
``libvirtmod*.so``) into the project's virtual environment. Nothing else in
hvmem needs it, so it is imported only when a libvirt command runs, and its
absence is one line saying what to install (:func:`import_libvirt`).

libvirt prints every error on stderr by default besides raising it; the
handler installed here keeps them to the exceptions, which hvmem turns into one
line each (:class:`~hvmem.errors.BackendError`).

Where the host is
-----------------
A URI names a driver and, for a remote connection, a host
(``qemu+ssh://kvm1/system``). What hvmem reads and writes through the
connection works the same either way; what it reads from the local machine
does not: KSM's ``/sys/kernel/mm/ksm`` is the local kernel's. :func:`host_is_local`
says whether the connection's guests run on this machine: a URI without a host
part (or naming this one) for a driver of real guests (``qemu``, ``kvm``). The
``test`` driver's domains live inside the libvirt library itself, in this
process: they have no QEMU and share no memory with anything, so the local host
is not theirs either.

The host's memory comes from the connection (``virNodeGetMemoryStats``: total,
free, buffers, cached), so a remote host is measured where it is; a driver
without it (``test``) gives its node info's size and ``virNodeGetFreeMemory``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

from hvmem.errors import BackendError

__all__ = ["HostMemory", "host_is_local", "host_memory", "import_libvirt", "open_connection"]

KIB_PER_MIB = 1024
_MISSING = ("the libvirt backend needs libvirt's Python binding: apt-get install "
            "python3-libvirt, then make setup (it links the binding into .venv)")
#: Drivers whose domains are processes of the machine the connection reaches.
LOCAL_DRIVERS = ("qemu", "kvm")


def import_libvirt() -> ModuleType:
    """The ``libvirt`` module, with its stderr printing switched off.

    Raises:
        BackendError: the binding is not installed (one line: what to install).
    """
    try:
        import libvirt
    except ImportError:
        raise BackendError(_MISSING) from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    return libvirt


def error_text(err: Exception) -> str:
    """A libvirt error as one line (its message, without libvirt's own prefix)."""
    text = err.get_error_message() if hasattr(err, "get_error_message") else None
    return " ".join(str(text or err).split())


def open_connection(uri: str) -> Any:
    """Open ``uri`` read-write.

    Raises:
        BackendError: the binding is missing or the connection fails (one line
            naming the URI and libvirt's reason).
    """
    libvirt = import_libvirt()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as err:
        raise BackendError(f"--uri {uri}: cannot connect ({error_text(err)})") from None


def host_is_local(uri: str) -> bool:
    """Whether a connection's guests run on this machine (module docs)."""
    parts = urlsplit(uri)
    driver = parts.scheme.split("+")[0]
    if driver not in LOCAL_DRIVERS:
        return False
    host = (parts.hostname or "").lower()
    return host in ("", "localhost", "127.0.0.1", "::1", socket.gethostname().lower())


@dataclass(frozen=True, slots=True)
class HostMemory:
    """The host's memory as the connection reports it (MiB)."""

    total_mib: float
    free_mib: float
    cache_mib: float = 0.0


def host_memory(conn: Any) -> HostMemory:
    """The connection's host memory (module docs).

    Raises:
        BackendError: the driver reports neither.
    """
    libvirt = import_libvirt()
    try:
        stats = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS)
        return HostMemory(total_mib=stats["total"] / KIB_PER_MIB,
                          free_mib=stats["free"] / KIB_PER_MIB,
                          cache_mib=(stats.get("buffers", 0) + stats.get("cached", 0))
                          / KIB_PER_MIB)
    except libvirt.libvirtError:
        pass
    try:
        return HostMemory(total_mib=float(conn.getInfo()[1]),
                          free_mib=conn.getFreeMemory() / (1 << 20))
    except libvirt.libvirtError as err:
        raise BackendError(f"{conn.getURI()}: cannot read the host's memory "
                           f"({error_text(err)})") from None
