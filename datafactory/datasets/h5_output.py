"""HDF5 files written through a Python file object, so that a full disk is one clean error.

When the operating system refuses a write (no space left, a file-size limit, a quota) and
the HDF5 library sees it, the library keeps blocks it cannot flush and its file no longer
closes: it crashes the interpreter (a segmentation fault after the error was printed), in
the command or in a worker process. Here HDF5 writes through :class:`Sink` (h5py's
``fileobj`` driver). The sink never lets a write fail: it keeps the first error, holds what
could not be written in memory, and answers reads from it, so the library closes the file
normally. The writer calls :meth:`Sink.check` after each sample and, on an error, drops the
file (:func:`abandon`) and reports the original ``OSError`` (errno and file name) in one line.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
from pathlib import Path
from typing import Iterator

import h5py


class Sink(io.RawIOBase):
    """A read/write binary file for h5py's ``fileobj`` driver that survives a failed write.

    The first write the operating system refuses is kept as :attr:`error`; from then on every
    write is held in memory instead (an overlay that reads see), so the HDF5 library never
    learns of the failure, keeps a consistent view of its file and closes it normally. The
    caller checks :meth:`check` after each sample and removes the file. Only what the library
    writes after the failure is held (the rest of one sample and the closing metadata).
    """

    def __init__(self, path: Path):
        super().__init__()
        self.path = Path(path)
        # unbuffered: a buffered file that cannot flush fails again on every later seek
        self._file = open(self.path, "w+b", buffering=0)  # noqa: SIM115 - closed by close()
        self.error: OSError | None = None
        self._overlay: list[tuple[int, bytes]] = []

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _fail(self, exc: OSError) -> None:
        if self.error is None:
            self.error = OSError(exc.errno, exc.strerror or str(exc), str(self.path))

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        position = self._file.tell()
        done = 0
        while done < len(view) and self.error is None:
            try:
                written = self._file.write(view[done:])
            except OSError as exc:
                self._fail(exc)
                break
            if not written:  # a write that stores nothing and says nothing: treat as a full disk
                self._fail(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
                break
            done += written
        if done < len(view):  # held in memory: the library must see every write succeed
            self._overlay.append((position + done, bytes(view[done:])))
        self._file.seek(position + len(view))
        return len(view)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        position = self._file.tell()
        n = self._file.readinto(view) or 0
        if not self._overlay:
            return n
        view[n:] = bytes(len(view) - n)  # past the end of what reached the disk: zeros, unless held
        end = position + len(view)
        reach = n
        for offset, chunk in self._overlay:  # later writes win: applied in order
            lo, hi = max(offset, position), min(offset + len(chunk), end)
            if lo < hi:
                view[lo - position : hi - position] = chunk[lo - offset : hi - offset]
                reach = max(reach, hi - position)
        self._file.seek(position + reach)
        return reach

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def truncate(self, size: int | None = None) -> int:
        if self.error is not None:
            return self.tell() if size is None else size
        try:
            return self._file.truncate(size)
        except OSError as exc:
            self._fail(exc)
            return self.tell() if size is None else size

    def flush(self) -> None:
        pass  # unbuffered: nothing waits in this process

    def check(self) -> None:
        """Raise the first operating-system error a write met (the file is then incomplete)."""
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._overlay = []
        super().close()


def create(path: Path) -> tuple[h5py.File, Sink]:
    """A new HDF5 file at ``path`` written through a :class:`Sink`; close it with :func:`finish`
    or drop it with :func:`abandon`."""
    sink = Sink(path)
    try:
        return h5py.File(sink, "w"), sink
    except BaseException:
        sink.close()
        raise


def finish(f: h5py.File, sink: Sink, fsync: bool = False) -> None:
    """Close a file made by :func:`create`; a failed write raises the original ``OSError``."""
    try:
        f.close()
        sink.flush()
        sink.check()
        if fsync:
            os.fsync(sink._file.fileno())
    except Exception as exc:
        abandon(f, sink)
        raise_original(sink, exc)
    sink.close()
    sink.check()


def abandon(f: h5py.File, sink: Sink) -> None:
    """Drop a file made by :func:`create` after a failure (the caller removes it): pending
    writes go nowhere, so closing cannot fail or crash."""
    try:
        f.close()
    except Exception:  # noqa: BLE001 - a broken file must not mask the original error
        pass
    try:
        sink.close()
    except Exception:  # noqa: BLE001
        pass


def raise_original(sink: Sink, exc: BaseException) -> None:
    """Re-raise the operating-system error behind an h5py failure (errno and file name intact),
    or ``exc`` itself when the file object saw none."""
    if sink.error is not None:
        raise sink.error from None
    raise exc


@contextlib.contextmanager
def writing(path: Path) -> Iterator[h5py.File]:
    """``with writing(path) as f``: a new HDF5 file through a :class:`Sink`, finished on a
    normal exit, abandoned on an exception (a refused write is raised as its ``OSError``)."""
    f, sink = create(path)
    try:
        yield f
    except BaseException as exc:
        abandon(f, sink)
        if isinstance(exc, Exception):
            raise_original(sink, exc)
        raise
    finish(f, sink)
