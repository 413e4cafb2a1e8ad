"""Signals: Ctrl-C and SIGTERM end a command cleanly, worker processes included.

The command process turns SIGINT and SIGTERM into :class:`Interrupted`, so every
``try/except BaseException`` that removes a temporary file runs on the way out. Worker
processes ignore SIGINT (the terminal sends it to the whole process group; the parent
decides) and, on SIGTERM, remove the partial files they registered and exit, at once
unless they are half way through sending a result (then as soon as it is sent). A worker
whose parent died (kill -9) notices within 0.2 s, removes its partial files and exits, and
never renames a finished file into place (:func:`orphaned`).
:func:`stop_pool` is what the parent does with its pool.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from concurrent.futures import Executor
from pathlib import Path

#: Temporary files the current worker process is writing (removed if it is terminated).
_PARTIALS: set[Path] = set()


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwind like KeyboardInterrupt, but past every handler that
    catches ``KeyboardInterrupt`` or ``Exception`` (the command line prints one line for it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def signals_raise():
    """Within the block (main thread only), SIGINT and SIGTERM raise :class:`Interrupted`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


#: Where a worker must not die: between the first and last byte of a message to the parent.
#: A result cut short there leaves the pool's reader thread in the parent waiting forever
#: for the rest of it (the parent holds the pipe's write end too, so no end-of-file comes).
_SENDING = {("connection.py", "send_bytes"), ("connection.py", "_send_bytes"), ("connection.py", "_send"),
            ("connection.py", "send"), ("queues.py", "put")}
_RECHECK_S = 0.02
_pending_signum = 0


def _sending_to_parent(frame) -> bool:
    while frame is not None:
        code = frame.f_code
        if (Path(code.co_filename).name, code.co_name) in _SENDING and "multiprocessing" in code.co_filename:
            return True
        frame = frame.f_back
    return False


def _worker_terminated(signum, frame) -> None:
    global _pending_signum
    if signum == signal.SIGALRM:
        signum = _pending_signum
    if _sending_to_parent(frame):  # finish the message first, then look again
        _pending_signum = signum
        signal.signal(signal.SIGALRM, _worker_terminated)
        signal.setitimer(signal.ITIMER_REAL, _RECHECK_S)
        return
    for path in list(_PARTIALS):
        with contextlib.suppress(OSError):
            os.unlink(path)
    os._exit(128 + signum)


#: The process that started this worker (set by :func:`init_worker_signals`); None outside a pool.
_PARENT_PID: int | None = None
_WATCH_S = 0.2


def orphaned() -> bool:
    """Whether this pool worker's parent has died (the worker was re-parented): its work has no
    one to report to, and a re-run of the command may already own the output."""
    return _PARENT_PID is not None and os.getppid() != _PARENT_PID


def _watch_parent() -> None:
    """A worker's watchdog thread: when the parent dies (kill -9 gives it no chance to stop the
    pool), remove this worker's partial files and exit at once, before it writes anything more."""
    import time

    while not orphaned():
        time.sleep(_WATCH_S)
    for path in list(_PARTIALS):
        with contextlib.suppress(OSError):
            os.unlink(path)
    os._exit(1)


def init_worker_signals() -> None:
    """Pool initializer: ignore SIGINT; on SIGTERM remove this worker's partial files and exit,
    once any result it is sending to the parent has been sent whole; and when the parent dies,
    do the same at once (a watchdog thread looks every 0.2 s)."""
    global _PARENT_PID
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_terminated)
    _PARENT_PID = os.getppid()
    threading.Thread(target=_watch_parent, name="parent-watchdog", daemon=True).start()


@contextlib.contextmanager
def partial_file(path: Path):
    """Register ``path`` as this worker's partial file for the block (see :func:`init_worker_signals`)."""
    _PARTIALS.add(Path(path))
    try:
        yield
    finally:
        _PARTIALS.discard(Path(path))


def stop_pool(executor: Executor) -> None:
    """Stop a local process pool now: terminate the workers (they remove their partial files)
    and wait for them and the pool's own thread to be gone.

    The work not yet done is not cancelled from here: the pool's thread sees its workers die
    and fails every pending future itself. Cancelling them at the same time races with that
    thread (CPython 3.11 then prints an ``InvalidStateError`` traceback from it).
    """
    processes = list((getattr(executor, "_processes", None) or {}).values())
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    executor.shutdown(wait=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.join(timeout=5)
