"""An exclusive lock on an output folder, so two runs cannot interleave their writes there.

``lock = lock_folder(output, "radfm evaluate")`` at the top of a job: a second job on the same
folder fails at once with an error naming the holder's pid. The lock is an ``flock`` on a
small file in the folder, released when the returned object is released, garbage collected
(the end of the function holding it) or the process dies (even by ``kill -9``).
"""

from __future__ import annotations

import os
from pathlib import Path

LOCK_NAME = ".radfm.lock"


class FolderLockedError(OSError):
    """Another process (or job) holds the folder's lock."""


class FolderLock:
    """A held lock; ``release()`` (or dropping the last reference) frees it."""

    def __init__(self, path: Path, handle) -> None:
        self.path = path
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the descriptor drops the flock
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def lock_folder(folder: str | os.PathLike, job: str = "another job") -> FolderLock:
    """Create ``folder`` if needed and lock it for this process; raises :class:`FolderLockedError` if taken."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise FolderLockedError(
            f"{folder}: {job} is already writing here (lock held by {holder}); wait for it to finish "
            "or choose another output folder") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return FolderLock(path, handle)


def locks_folder(parameter: str, job: str):
    """Decorator: the call holds :func:`lock_folder` on its argument ``parameter`` (a folder) while it runs.

    The lock is released when the call returns or raises. A folder the call created only for
    its lock is removed again if the call fails before writing anything there.
    """
    import functools
    import inspect

    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def locked(*args, **kwargs):
            if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 holds the lock for the whole job
                return function(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            folder = Path(bound.arguments[parameter])
            existed = folder.exists()
            lock = lock_folder(folder, job)
            try:
                return function(*args, **kwargs)
            except BaseException:
                lock.release()
                if not existed and [p.name for p in folder.iterdir()] == [LOCK_NAME]:
                    lock.path.unlink(missing_ok=True)
                    folder.rmdir()
                raise
            finally:
                lock.release()

        return locked

    return decorate
