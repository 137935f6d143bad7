"""Output directories: where a run's results go, without destroying anything hvmem did not write.

A results directory is named by the user (``--out``) and is written at the end
of a run, which may take an hour; the name may be a typo for a directory full
of the user's files, the current directory, ``..`` or a home directory. So an
:class:`OutputDir` is opened *before* the run and does four things:

check
    The name is refused if it is ``/``, the home directory, the current
    directory or one of its parents (``--out .``, ``--out ..``, ``--out ""``),
    a symbolic link, a file, or a directory that is not an hvmem results
    directory. A results directory is one with an ``hvmem-manifest.json`` that
    lists the files hvmem wrote there; one written before the manifest existed
    is recognised by holding only results files. An empty directory is taken
    as new. Earlier results are replaced only when the caller says so
    (``--force``).
lock
    ``.<name>.lock`` beside the directory, held with ``flock`` for the whole
    run and holding the writer's process id: a second run with the same
    ``--out`` is refused with that id, so two runs never mix their files. The
    kernel drops the lock when its holder dies, so a killed run leaves no
    stale lock behind; the holder removes the file when it is done, and a
    taker checks that the file it locked is still the one at that name.
stage
    A directory of the run's own (``.<name>.<random>.partial``, made with
    ``mkdtemp`` beside the target, so on the same filesystem), made before the
    run: that is the check that the place can be created and written. The
    results are written there, and nowhere else, at the end.
commit
    A new target is the staged directory renamed into place, in one step. An
    earlier results directory is renamed aside, the staged one renamed into
    place and then the old one's listed files removed, so a reader sees the
    old results or the new, never a mixture. If the user put files of their
    own into the earlier results directory they stay: the new files replace
    the old ones there one by one instead, and hvmem's old files that the new
    run did not write are removed (only those the manifest lists).

Closing without a commit (the run failed before it had anything to write)
removes the staged directory and releases the lock. A run killed outright
(SIGKILL, a power cut) cannot: its staged directory stays beside the target
until the next run with the same name takes the lock, which proves no other
process is writing there, and removes it if it holds nothing but files hvmem
writes. A ``.<name>.<random>.old`` directory (a kill in the middle of a
commit) holds the earlier results and is always left for the user.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from types import TracebackType

from hvmem.errors import ConfigError

#: The file in a results directory that lists what hvmem wrote there.
MANIFEST_NAME = "hvmem-manifest.json"
#: What the manifest's ``format`` says, so a user's file of that name is not taken for one.
MANIFEST_FORMAT = "hvmem-results"
#: The files a results directory held before it had a manifest.
LEGACY_FILES = frozenset({"scenario.json", "host.parquet", "vms.parquet", "events.jsonl",
                          "summary.json"})


def results_files(path: Path) -> frozenset[str] | None:
    """The files hvmem wrote in directory ``path``, or None if it is not a results directory."""
    names = {entry.name for entry in os.scandir(path)}
    if MANIFEST_NAME in names:
        try:
            manifest = json.loads((path / MANIFEST_NAME).read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            return None
        files = manifest.get("files")
        if not isinstance(files, list) or not all(_plain_name(f) for f in files):
            return None
        return frozenset(files) | {MANIFEST_NAME}
    if "summary.json" in names and names <= LEGACY_FILES:
        return frozenset(names)
    return None


def _plain_name(name: object) -> bool:
    """A file name of the directory itself: no separators, not ``.`` or ``..``."""
    return (isinstance(name, str) and name not in ("", ".", "..") and "/" not in name
            and "\0" not in name)


class OutputDir:
    """A results directory being written: checked, locked and staged before a run.

    Args:
        path: the results directory.
        replace: earlier results there may be replaced (``--force``).
        label: the flag that named it (``"--out"``), for messages; None from Python.

    Use as a context manager; write the files into :attr:`staging`, then
    :meth:`commit` with their names.

    Raises (on entering):
        ConfigError: the path is refused (see the module essay), is being written by
            another process, or cannot be created or written.
    """

    def __init__(self, path: str | Path, *, replace: bool = False, label: str | None = None):
        self.path = Path(path)
        self.raw = str(path)
        self.replace = replace
        self.label = label
        self.staging: Path | None = None
        self._lock_fd: int | None = None
        self._lock_path = self.path.parent / f".{self.path.name}.lock"

    # -- messages ---------------------------------------------------------------------------
    def _shown(self) -> str:
        return f"{self.label} {self.raw!r}" if self.label else self.raw

    def _refuse(self, why: str) -> ConfigError:
        return ConfigError(f"{self._shown()}: {why}")

    # -- open: check, lock, stage -------------------------------------------------------------
    def __enter__(self) -> OutputDir:
        self.open()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def open(self) -> None:
        """Check the target, take its lock and make the staging directory."""
        self._check_name()
        self._check_target()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._check_target()  # again, now that nobody else may change it
            self._remove_stale_staging()
            self.staging = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".partial",
                                                 dir=self.path.parent))
        except OSError as err:
            self.close()
            raise self._refuse(f"cannot write results there ({err.strerror})") from None
        except BaseException:
            self.close()
            raise

    def _remove_stale_staging(self) -> None:
        """Remove the staged directories of runs killed outright; called with the lock held.

        Only ``mkdtemp``'s names for this target (``.<name>.`` + 8 random characters +
        ``.partial``) holding nothing but results files are removed.
        """
        prefix, suffix = f".{self.path.name}.", ".partial"
        for entry in os.scandir(self.path.parent):
            middle = entry.name[len(prefix):-len(suffix)]
            if not (entry.name.startswith(prefix) and entry.name.endswith(suffix)
                    and len(middle) == 8 and "." not in middle
                    and entry.is_dir(follow_symlinks=False)):
                continue
            staged = Path(entry.path)
            with contextlib.suppress(OSError):
                names = {e.name for e in os.scandir(staged)}
                if names <= LEGACY_FILES | {MANIFEST_NAME}:
                    _remove_listed(staged, names)
                    staged.rmdir()

    def _check_name(self) -> None:
        """Refuse the places whose loss no run is worth: /, home, here and its parents."""
        if self.raw.strip() == "":
            raise self._refuse("an empty name; name a directory for the results")
        if self.path.name in ("", ".", ".."):
            raise self._refuse("names no directory of its own; name a new directory")
        resolved = self.path.resolve()
        home = None
        here = Path.cwd().resolve()
        if resolved == Path(resolved.anchor):
            raise self._refuse("is the root directory; name a new directory")
        with contextlib.suppress(RuntimeError):  # no home directory known
            home = Path.home().resolve()
        if resolved == home:
            raise self._refuse("is the home directory; name a new directory")
        if resolved == here or resolved in here.parents:
            raise self._refuse("holds the current directory; name a new directory")

    def _check_target(self) -> None:
        """Refuse what is not new, empty or (with ``replace``) earlier results."""
        path = self.path
        if path.is_symlink():
            raise self._refuse("is a symbolic link; name the directory itself")
        if not path.exists():
            return
        if not path.is_dir():
            raise self._refuse("exists and is not a directory")
        try:
            files = results_files(path)
            empty = not any(os.scandir(path))
        except OSError as err:
            raise self._refuse(f"cannot read it ({err.strerror})") from None
        if empty:
            return
        if files is None:
            raise self._refuse(f"exists and is not an hvmem results directory (no "
                               f"{MANIFEST_NAME}); nothing in it was touched; name a new "
                               f"directory")
        if not self.replace:
            hint = "--force replaces them" if self.label else "overwrite=True replaces them"
            raise self._refuse(f"exists already, with earlier results ({hint})")

    def _lock(self) -> None:
        """Take ``.<name>.lock`` (flock), or refuse naming the process that holds it."""
        while True:
            fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise ConfigError(f"{self._shown()} is being written by "
                                  f"{f'process {holder}' if holder else 'another process'}"
                                  ) from None
            except BaseException:
                os.close(fd)
                raise
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self._lock_path))
            except FileNotFoundError:
                same = False
            if same:  # not a file its last holder removed after we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    # -- commit and close -----------------------------------------------------------------------
    def commit(self, written: list[str]) -> Path:
        """Put the staged files, named in ``written``, in place; returns the directory.

        ``written`` lists the files in the order they should replace earlier ones
        when they must go one by one (the summary last).
        """
        if self.staging is None or self._lock_fd is None:
            raise RuntimeError("commit of an output directory that is not open")
        staging = self.staging
        manifest = {"format": MANIFEST_FORMAT, "files": list(written)}
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        path = self.path
        try:
            self._check_target()
        except ConfigError as err:  # changed under the run: keep what it wrote
            self.staging = None
            raise ConfigError(f"{err}; the results are in {staging}") from None
        if not path.exists():
            os.rename(staging, path)
        elif not any(os.scandir(path)):
            os.rmdir(path)
            os.rename(staging, path)
        else:
            old = results_files(path) or frozenset()
            theirs = {entry.name for entry in os.scandir(path)} - old
            if theirs:
                self._replace_file_by_file(staging, old, written)
            else:
                aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old",
                                              dir=path.parent))
                os.rename(path, aside / "results")
                os.rename(staging, path)
                _remove_listed(aside / "results", old)
                _remove_listed(aside, {"results"})
                with contextlib.suppress(OSError):
                    aside.rmdir()
        self.staging = None
        return path

    def _replace_file_by_file(self, staging: Path, old: frozenset[str],
                              written: list[str]) -> None:
        """Earlier results beside files of the user's: replace hvmem's files only."""
        path = self.path
        listed = sorted((old - {MANIFEST_NAME}) | set(written))
        # Whatever stops this half-way, the manifest names every file of hvmem's there.
        (path / MANIFEST_NAME).write_text(json.dumps(
            {"format": MANIFEST_FORMAT, "files": listed}, indent=2) + "\n")
        for name in written:
            os.replace(staging / name, path / name)
        _remove_listed(path, old - set(written) - {MANIFEST_NAME})
        os.replace(staging / MANIFEST_NAME, path / MANIFEST_NAME)
        staging.rmdir()

    def close(self) -> None:
        """Remove an uncommitted staging directory and release the lock."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)  # made by mkdtemp for this run alone
            self.staging = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                self._lock_path.unlink()  # while still held: a taker checks the name
            os.close(self._lock_fd)
            self._lock_fd = None


def _remove_listed(directory: Path, names: frozenset[str] | set[str]) -> None:
    """Remove the named files of ``directory`` (and an empty directory named so), nothing else."""
    for name in names:
        target = directory / name
        with contextlib.suppress(FileNotFoundError):
            if target.is_dir() and not target.is_symlink():
                with contextlib.suppress(OSError):
                    target.rmdir()
            else:
                target.unlink()


def _read_pid(fd: int) -> int | None:
    """The process id in a lock file (its holder may not have written it yet)."""
    for _ in range(20):
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None
