"""Outputs that outlive a command: checked before any work, written by one process at a time.

Every command that writes a file or a directory first calls :func:`check_output` (the place
must be usable: a writable parent, and nothing there but a regular file or a directory of
the kind asked for) and then holds :func:`exclusive_output` for the whole run. The lock is a
POSIX record lock on a hidden sibling, ``.NAME.lock``: the kernel releases it when the
process ends, however it ends, and forked worker processes do not inherit it. A second
writer is refused at once with one line naming the holder (pid, host, command).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from datafactory.errors import FactoryError

#: Outputs this process holds (POSIX locks are per process: a second claim here must be refused by hand).
_HELD: set[str] = set()


def lock_path(path: Path) -> Path:
    """The hidden lock file of output ``path``: ``PARENT/.NAME.lock``."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


def check_output(path: Path, kind: str, flag: str = "--out") -> None:
    """Refuse an output place that cannot be used, before any work is done.

    ``kind`` is ``"file"`` or ``"dir"``. The path must not be a symbolic link; an existing
    ``file`` output must be a regular file, an existing ``dir`` output a directory; the
    nearest existing parent must be a writable directory.
    """
    if kind not in ("file", "dir"):
        raise ValueError(f"kind must be 'file' or 'dir' (got {kind!r})")
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise FactoryError(f"{flag}: '{path}' does not name a {'file' if kind == 'file' else 'directory'}")
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise FactoryError(f"{flag}: cannot use '{path}': {exc.strerror}") from None
    if info is not None:
        if stat.S_ISLNK(info.st_mode):
            raise FactoryError(f"{flag}: '{path}' is a symbolic link; give the real path ({os.path.realpath(path)})")
        if kind == "file" and stat.S_ISDIR(info.st_mode):
            raise FactoryError(f"{flag}: '{path}' is a directory; give a file name")
        if kind == "file" and not stat.S_ISREG(info.st_mode):
            raise FactoryError(f"{flag}: '{path}' exists and is not a regular file; choose another name")
        if kind == "dir" and not stat.S_ISDIR(info.st_mode):
            raise FactoryError(f"{flag}: '{path}' is a file; give a directory")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FactoryError(f"{flag}: cannot create '{path}': '{parent}' is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        try:
            read_only = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
        except OSError:
            read_only = False
        raise FactoryError(f"{flag}: cannot write in '{parent}' ({'read-only file system' if read_only else 'permission denied'})")


def check_disk_space(path: Path, needed_bytes: float, what: str, flag: str = "--out") -> None:
    """Refuse, before any work, a run whose output cannot fit: ``needed_bytes`` (a lower bound of
    what it will write) against the free space of the file system that will hold ``path``."""

    parent = Path(path)
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        return  # a place whose free space cannot be read is left to the write itself
    if needed_bytes > free:
        raise FactoryError(f"{flag}: {what} needs at least {_size(needed_bytes)} and '{parent}' has {_size(free)} free; "
                           "free some space, choose another place, or ask for fewer samples")


def available_memory_bytes() -> float | None:
    """Memory the system can give new work without swapping (``MemAvailable``), or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(needed_per_worker: float, workers: int, what: str) -> None:
    """Refuse, before any work, a run whose workers together need more memory than is available."""
    available = available_memory_bytes()
    if available is None or needed_per_worker * workers <= available:
        return
    fit = int(available // needed_per_worker)
    advice = f"use `workers={fit}`" if fit >= 1 else "ask for smaller images (`size`)"
    raise FactoryError(f"{what} needs about {_size(needed_per_worker)} per worker, {_size(needed_per_worker * workers)} for "
                       f"{workers} worker(s), and this machine has {_size(available)} available; {advice}", field="workers")


def _size(n_bytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{n_bytes:.3g} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1000
    return f"{n_bytes:.3g} PB"


def _holder(fd: int) -> str:
    """The holder line a locking process wrote into its lock file, or a generic description."""
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "another process"


@contextlib.contextmanager
def exclusive_output(path: Path, command: str = "", flag: str = "--out") -> Iterator[None]:
    """Hold the one-writer lock of output ``path`` for the ``with`` block.

    Raises :class:`FactoryError` at once if another process (or this one) holds it. The lock
    file is removed on a normal or failed exit; after a kill it stays behind, unlocked, and
    the next writer takes it over.
    """
    path = Path(path)
    key = os.path.abspath(path)
    if key in _HELD:
        raise FactoryError(f"{flag}: '{path}' is already being written by this process")
    lock = lock_path(path)
    while True:
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FactoryError(f"{flag}: cannot write in '{lock.parent}' ({(exc.strerror or str(exc)).lower()})") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(fd)
            os.close(fd)
            if exc.errno in (errno.EACCES, errno.EAGAIN):
                raise FactoryError(f"{flag}: '{path}' is being written by {holder}; wait for it to end or choose another output") from None
            raise
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} ({command or 'factory'})\n".encode(), 0)
        _HELD.add(key)
        yield
    finally:
        _HELD.discard(key)
        with contextlib.suppress(OSError):
            os.unlink(lock)
        os.close(fd)


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def named_os_errors(path: Path):
    """Within the block, an ``OSError`` that names no file (a failed ``write``: no space, a size
    limit) is raised again naming ``path``, so its one-line message says what was being written."""
    try:
        yield
    except OSError as exc:
        if exc.filename or exc.errno is None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None


def write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """Write ``data`` to ``PATH.partial``, fsync, and rename it to ``path``; a failure removes the
    temporary file and raises an ``OSError`` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".partial")
    try:
        with named_os_errors(path), open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, record: dict[str, Any]) -> None:
    """Write JSON under a unique temporary name, fsync, and rename: a reader sees the old or
    the new file, never half, and two writers never share a temporary file."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    tmp = Path(name)
    try:
        with named_os_errors(path), os.fdopen(fd, "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def replacing_directory(directory: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of ``directory`` to fill. When the block ends normally it
    takes the place of ``directory`` (an earlier one is removed only after the swap); when it
    raises, the temporary directory is deleted and ``directory`` is left as it was."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
