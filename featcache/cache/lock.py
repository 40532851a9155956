"""The single-writer lock of a cache: an OS lock on ``<cache>.lock``, released by the OS when its holder dies."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from featcache.errors import LockedError

LOCK_SUFFIX = ".lock"


class CacheLock:
    """An exclusive, non-blocking lock on a cache; the OS releases it when the holder dies."""

    def __init__(self, cache_path: Path):
        self.path = Path(str(cache_path) + LOCK_SUFFIX)
        self._fh = None

    def acquire(self) -> CacheLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise LockedError(
                f"{self.path.with_suffix('')} is being written by {holder}; wait for it to finish "
                f"or write to another file with -o"
            ) from None
        try:  # who holds the lock is a courtesy for the next caller; a full disk must not stop us
            fh.seek(0)
            fh.truncate()
            fh.write(f"featcache process {os.getpid()} (since {time.strftime('%Y-%m-%d %H:%M:%S')})\n")
            fh.flush()
        except OSError:
            pass
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.truncate(0)
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> CacheLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
