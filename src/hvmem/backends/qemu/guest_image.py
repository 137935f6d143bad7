"""A tiny guest, built once and cached: a Debian cloud kernel and a busybox initramfs.

What it is
----------
The QEMU backend needs guests that boot in seconds under TCG, have a working
virtio-balloon driver, and run a workload whose memory behaviour is known. The
recipe follows [QEMU-PROBE], which measured it on this kind of
machine (kernel, extraction and initramfs together in 3.8 s; the guest reaches
its init 3.6-4.4 s after QEMU starts):

* **Kernel**: Debian's ``linux-image-cloud-amd64`` meta package is resolved to
  the versioned image package with ``apt-cache depends`` (the ABI number
  changes over time), fetched with ``apt-get download`` and unpacked with
  ``dpkg -x`` into the cache. It is never installed: an installed image
  package runs hooks that touch the host's boot. ``vmlinuz`` is used as it is;
  the virtio modules (``virtio_ring``, ``virtio``, ``virtio_pci_modern_dev``,
  ``virtio_pci_legacy_dev``, ``virtio_pci``, ``virtio_balloon``; that kernel
  builds them as modules, with ``PAGE_REPORTING=y``) are copied out,
  decompressed if they are ``.ko.xz``, and loaded by init in dependency order.
* **Initramfs**: a statically linked busybox (Debian ``busybox-static``), the
  modules, ``/dev/console``, and the init script :data:`INIT_SCRIPT`, written
  as a ``newc`` cpio archive by :func:`write_cpio` (no ``cpio`` tool needed)
  and gzipped.
* **Workload** (the init script): on a schedule set on the kernel command line
  (``hv.*`` words, :class:`WorkloadParams`) it fills a tmpfs with *shared* data
  (one 32-byte line repeated, so every page is identical: within the guest and
  across guests, what KSM merges) and *private* data (from ``/dev/urandom``:
  unique to the guest), prints the MD5 of its data, re-reads and checks it every
  ``hv.touch`` seconds (``HVMEM-CHECK ok`` or ``HVMEM-CHECK BAD``; re-reading
  with ``md5sum`` touches every page, which also brings back pages the host
  swapped), frees it after ``hv.hold`` seconds, waits ``hv.idle`` seconds and
  allocates again, for ``hv.cycles`` cycles (0: for ever). Filling from a
  repeated 1 MiB block keeps the fill fast under TCG (``yes | head -c 128M``
  takes 17 s there [QEMU-PROBE]). ``hv.balloon=0`` leaves the
  balloon driver out: a guest whose balloon never inflates.

Markers on the serial console: ``HVMEM-INIT``, ``HVMEM-DRIVERS``,
``HVMEM-ALLOC``, ``HVMEM-READY``, ``HVMEM-CHECK``, ``HVMEM-FREED``,
``HVMEM-MEM``.

The cache directory is ``$HVMEM_QEMU_CACHE``, else ``$XDG_CACHE_HOME/hvmem/qemu``,
else ``~/.cache/hvmem/qemu``. An image is keyed by the kernel version and a hash
of the init script and module list, so a changed recipe builds a new one.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hvmem.errors import BackendError, ConfigError

__all__ = [
    "INIT_SCRIPT",
    "MODULES",
    "GuestImage",
    "WorkloadParams",
    "build_image",
    "default_cache_dir",
    "write_cpio",
]

KERNEL_PACKAGE = "linux-image-cloud-amd64"
#: Load order, from the ``depends=`` of each module [QEMU-PROBE].
MODULES = ("virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
           "virtio_pci", "virtio_balloon")
BUSYBOX_PATHS = (Path("/bin/busybox"), Path("/usr/bin/busybox"))

INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "HVMEM-INIT uptime=$(cut -d' ' -f1 /proc/uptime)"
SHARED=0; PRIVATE=0; HOLD=0; IDLE=0; CYCLES=1; TOUCH=5; BALLOON=1
for w in $(cat /proc/cmdline); do
  case "$w" in
    hv.shared=*) SHARED=${w#*=} ;;
    hv.private=*) PRIVATE=${w#*=} ;;
    hv.hold=*) HOLD=${w#*=} ;;
    hv.idle=*) IDLE=${w#*=} ;;
    hv.cycles=*) CYCLES=${w#*=} ;;
    hv.touch=*) TOUCH=${w#*=} ;;
    hv.balloon=*) BALLOON=${w#*=} ;;
  esac
done
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
    virtio_balloon; do
  [ "$m" = virtio_balloon ] && [ "$BALLOON" = 0 ] && continue
  [ -f /lib/modules/$m.ko ] || continue
  insmod /lib/modules/$m.ko || echo "HVMEM-WARN insmod $m failed"
done
echo "HVMEM-DRIVERS $(ls /sys/bus/virtio/drivers/ 2>/dev/null | tr '\n' ' ')"
mount -t tmpfs -o size=95% tmpfs /mnt
yes HVMEM-SHARED-PAGE-0123456789abc | head -c 1048576 > /tmp/pattern
mem() {
  echo "HVMEM-MEM $(awk '/^(MemTotal|MemFree|MemAvailable):/{printf "%s%s ", $1, $2}' \
    /proc/meminfo)"
}
alloc() {
  n=0; while [ $n -lt $SHARED ]; do cat /tmp/pattern; n=$((n+1)); done > /mnt/shared
  [ "$PRIVATE" -gt 0 ] && dd if=/dev/urandom of=/mnt/private bs=1M count=$PRIVATE 2>/dev/null
  SUM=$(cat /mnt/shared /mnt/private 2>/dev/null | md5sum | cut -d' ' -f1)
  echo "HVMEM-ALLOC shared=$SHARED private=$PRIVATE md5=$SUM uptime=$(cut -d' ' -f1 /proc/uptime)"
}
check() {
  now=$(cat /mnt/shared /mnt/private 2>/dev/null | md5sum | cut -d' ' -f1)
  if [ "$now" = "$SUM" ]; then
    echo "HVMEM-CHECK ok md5=$now"
  else
    echo "HVMEM-CHECK BAD md5=$now expected=$SUM"
  fi
}
hold() {
  t=0
  while [ "$HOLD" = 0 ] || [ $t -lt $HOLD ]; do
    sleep $TOUCH; t=$((t+TOUCH)); check; mem
  done
}
cycle=0
while [ "$CYCLES" = 0 ] || [ $cycle -lt $CYCLES ]; do
  alloc
  [ $cycle = 0 ] && { mem; echo "HVMEM-READY"; }
  hold
  rm -f /mnt/shared /mnt/private; echo "HVMEM-FREED cycle=$cycle"; mem
  sleep $IDLE
  cycle=$((cycle+1))
done
[ $cycle = 0 ] && echo "HVMEM-READY"
while true; do sleep 5; mem; done
"""


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """The in-guest workload's schedule (kernel command-line ``hv.*`` words).

    Attributes:
        shared_mib: identical-page data (mergeable by KSM across guests).
        private_mib: random data unique to the guest.
        hold_s: how long data is held before it is freed (0: for ever).
        idle_s: pause after freeing before the next allocation.
        cycles: allocate/hold/free cycles (0: for ever).
        touch_s: interval of the re-read and checksum check while holding.
        balloon: load the virtio-balloon driver.
    """

    shared_mib: int = 64
    private_mib: int = 32
    hold_s: int = 0
    idle_s: int = 10
    cycles: int = 1
    touch_s: int = 5
    balloon: bool = True

    def __post_init__(self) -> None:
        for name in ("shared_mib", "private_mib", "hold_s", "idle_s", "cycles"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"workload {name}: expected a whole number >= 0, "
                                  f"found {value!r}")
        if isinstance(self.touch_s, bool) or not isinstance(self.touch_s, int) or (
                self.touch_s < 1):
            raise ConfigError(f"workload touch_s: expected a whole number >= 1, "
                              f"found {self.touch_s!r}")

    def kernel_args(self) -> str:
        """The ``hv.*`` words for the kernel command line."""
        return (f"hv.shared={self.shared_mib} hv.private={self.private_mib} "
                f"hv.hold={self.hold_s} hv.idle={self.idle_s} hv.cycles={self.cycles} "
                f"hv.touch={self.touch_s} hv.balloon={int(self.balloon)}")


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built guest: kernel, initramfs and the kernel version they come from."""

    kernel: Path
    initramfs: Path
    kernel_version: str


def default_cache_dir() -> Path:
    """Where guest images are cached (see the module docs)."""
    env = os.environ.get("HVMEM_QEMU_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hvmem" / "qemu"


# -- cpio ------------------------------------------------------------------------------


def write_cpio(entries: Iterable[tuple[str, int, bytes, int]]) -> bytes:
    """A ``newc`` cpio archive of (name, mode, data, rdev) entries, in order.

    ``mode`` carries the file type (``stat.S_IFDIR``, ``S_IFREG``, ``S_IFLNK``,
    ``S_IFCHR``); a symlink's data is its target; ``rdev`` is ``(major << 8) |
    minor`` for device nodes.
    """
    out = io.BytesIO()

    def pad() -> None:
        out.write(b"\0" * (-out.tell() % 4))

    ino = 1
    for name, mode, data, rdev in [*entries, ("TRAILER!!!", 0, b"", 0)]:
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 2 if stat.S_ISDIR(mode) else 1, 0, len(data), 0, 0,
                  rdev >> 8, rdev & 0xFF, len(raw), 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(raw)
        pad()
        out.write(data)
        pad()
        ino += 1
    return out.getvalue()


# -- building --------------------------------------------------------------------------


def _run(argv: list[str], cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600,
                              check=False)
    except FileNotFoundError:
        raise BackendError(f"{argv[0]} not found (the guest kernel comes from Debian's apt: "
                           "apt-get download + dpkg -x)") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{' '.join(argv)}: took more than 10 minutes") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackendError(f"{' '.join(argv)} failed: {last}")
    return done.stdout


def _resolve_package(package: str) -> str:
    """The versioned image package a meta package depends on (or the package itself)."""
    out = _run(["apt-cache", "depends", package])
    for line in out.splitlines():
        words = line.split()
        if (len(words) == 2 and words[0] == "Depends:"
                and words[1].startswith("linux-image-")
                and words[1][len("linux-image-"):][:1].isdigit()):
            return words[1]
    return package


def _find_busybox() -> Path:
    for path in BUSYBOX_PATHS:
        if path.is_file():
            with open(path, "rb") as handle:
                head = handle.read(4096)
            if b"/lib64/ld-linux" in head or b"/lib/ld-linux" in head:
                continue  # dynamically linked: would not run in the initramfs
            return path
    raise BackendError("no statically linked busybox found (apt-get install busybox-static)")


def _module_bytes(root: Path, name: str) -> bytes:
    for suffix in (".ko", ".ko.xz"):
        found = sorted(root.rglob(name + suffix))
        if found:
            data = found[0].read_bytes()
            return lzma.decompress(data) if suffix == ".ko.xz" else data
    raise BackendError(f"kernel module {name} not found under {root} (built in, or "
                       "compressed with zstd, which this builder does not read)")


def _recipe_hash(busybox: bytes) -> str:
    h = hashlib.sha256(INIT_SCRIPT.encode())
    h.update(" ".join(MODULES).encode())
    h.update(hashlib.sha256(busybox).digest())
    return h.hexdigest()[:12]


def build_image(cache_dir: Path | None = None, package: str = KERNEL_PACKAGE,
                force: bool = False) -> GuestImage:
    """Build the guest (kernel + initramfs) into the cache, or return the cached one.

    Raises:
        BackendError: apt, dpkg or busybox is missing, or a step fails (the
            message names the step).
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    busybox = _find_busybox()
    busybox_bytes = busybox.read_bytes()
    real = _resolve_package(package)
    key = f"{real}-{_recipe_hash(busybox_bytes)}"
    out = cache / key
    image = GuestImage(out / "vmlinuz", out / "initramfs.cpio.gz", real)
    version_file = out / "kernel-version"
    if not force and image.kernel.is_file() and image.initramfs.is_file() and (
            version_file.is_file()):
        return GuestImage(image.kernel, image.initramfs, version_file.read_text().strip())
    try:
        cache.mkdir(parents=True, exist_ok=True)
        debs = cache / "debs"
        debs.mkdir(exist_ok=True)
        if not sorted(debs.glob(f"{real}_*.deb")):
            _run(["apt-get", "download", real], cwd=debs)
        deb = sorted(debs.glob(f"{real}_*.deb"))[-1]
        with tempfile.TemporaryDirectory(dir=cache, prefix="build-") as tmp:
            kroot = Path(tmp) / "kroot"
            _run(["dpkg", "-x", str(deb), str(kroot)])
            versions = sorted(p.name for p in (kroot / "lib" / "modules").iterdir())
            if not versions:
                raise BackendError(f"{deb.name}: no /lib/modules inside")
            version = versions[0]
            kernel = kroot / "boot" / f"vmlinuz-{version}"
            if not kernel.is_file():
                raise BackendError(f"{deb.name}: no boot/vmlinuz-{version} inside")
            entries: list[tuple[str, int, bytes, int]] = []
            for d in ("bin", "sbin", "proc", "sys", "dev", "mnt", "tmp", "lib",
                      "lib/modules"):
                entries.append((d, stat.S_IFDIR | 0o755, b"", 0))
            entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5 << 8) | 1))
            entries.append(("bin/busybox", stat.S_IFREG | 0o755, busybox_bytes, 0))
            entries.append(("bin/sh", stat.S_IFLNK | 0o777, b"busybox", 0))
            for name in MODULES:
                data = _module_bytes(kroot / "lib" / "modules" / version, name)
                entries.append((f"lib/modules/{name}.ko", stat.S_IFREG | 0o644, data, 0))
            entries.append(("init", stat.S_IFREG | 0o755, INIT_SCRIPT.encode(), 0))
            stage = Path(tmp) / "out"
            stage.mkdir()
            shutil.copyfile(kernel, stage / "vmlinuz")
            (stage / "initramfs.cpio.gz").write_bytes(
                gzip.compress(write_cpio(entries), compresslevel=1))
            (stage / "kernel-version").write_text(version + "\n")
            if out.exists():
                shutil.rmtree(out)
            stage.rename(out)
    except OSError as err:
        raise BackendError(f"{cache}: cannot build the guest image ({err})") from None
    return GuestImage(out / "vmlinuz", out / "initramfs.cpio.gz", version)
