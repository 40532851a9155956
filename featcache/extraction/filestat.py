"""Sizes and modification times of many files, stat-ed by threads or helper processes while extract goes on.

One ``stat`` per file is what noticing a changed image costs, and for a large collection it is most
of an update's time. Where the compiled :mod:`featcache.extraction.fsscan` was built, threads stat a
folder's names at a time with the interpreter lock released (one per core, at about the cost of the
system call). Without it, Python threads do not speed it up: each call takes the interpreter lock
around a system call of a few microseconds, and two threads mostly wait for each other. Processes
do (``python -m benchmarks.filestat``, 200,000 files on 2 cores, medians of 5 against a loop of
``os.stat`` by full path: by name in one process 0.84x the time, two threads 1.13x, helper
processes 0.58x). So past :data:`PARALLEL_MIN` files the list is cut in consecutive shares and
helper processes (a bare ``python -I -S``, no imports beyond ``os``) stat theirs, one per core,
while this process reads the existing cache and matches its rows. A helper that cannot start or
fails leaves its share to this process: the result is the same.
"""

from __future__ import annotations

import os
import queue
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from featcache.extraction import fsscan

#: files below which this process stats them all (a helper takes some 20-40 ms to start)
PARALLEL_MIN = 20_000
#: helper processes (or threads) at most
MAX_HELPERS = 4
#: names a thread stats at once
THREAD_NAMES = 4096

# Reads "folder\0name\0name\0...folder\0name..." (a folder is the item with a "/"), writes per name
# its size and mtime in ns as two little-endian int64, or -1 and the errno when it cannot be stat-ed.
_HELPER = r"""
import os, struct, sys
pack, out, fd, err = struct.Struct("<qq").pack, bytearray(), None, 0
for item in sys.stdin.buffer.read().split(b"\0"):
    if b"/" in item:
        if fd is not None:
            os.close(fd)
        try:
            fd, err = os.open(item, os.O_RDONLY | os.O_DIRECTORY), 0
        except OSError as exc:
            fd, err = None, exc.errno or 0
        continue
    if fd is None:
        out += pack(-1, err)
        continue
    try:
        st = os.stat(item, dir_fd=fd)
    except OSError as exc:
        out += pack(-1, exc.errno or 0)
        continue
    out += pack(st.st_size, st.st_mtime_ns)
sys.stdout.buffer.write(out)
"""


class FileStats:
    """The files of ``(folder, names)`` pairs being stat-ed: :meth:`start` sets helpers to work on a long
    list at once; :meth:`result` gives the size and mtime of each (waiting for the helpers, or stat-ing
    here); :meth:`close` stops helpers whose result is no longer wanted."""

    def __init__(self, pieces: list[tuple[bytes, list[bytes]]], helpers: list, threaded: list[Future] | None = None):
        self._pieces, self._helpers, self._threaded = pieces, helpers, threaded or []

    @classmethod
    def start(cls, folders: Iterable[tuple[bytes, list[bytes]]], total: int | None = None) -> FileStats:
        """Stat the names of ``folders`` (an iterable, taken once; ``total`` names in all, counted when
        not given): a helper starts as soon as its share is listed, and holds it as one block of bytes."""
        if fsscan.native is not None:
            return cls([], [], _threaded(folders))
        if total is None:
            folders = list(folders)
            total = sum(len(names) for _, names in folders)
        count = _helpers(total)
        if not count:
            return cls([(os.path.abspath(folder), names) for folder, names in folders if names], [])
        return cls([], [(_Helper.start(share), share) for share in _shares(folders, total, count)])

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Size and mtime (ns) of every name, in order, as int64 arrays; where a file cannot be stat-ed
        its size is -1 and its mtime the error number (see :func:`reason`). The two are columns of one
        table (16 bytes a file) that each helper's answer is read straight into."""
        if self._threaded:
            table = np.concatenate([future.result() for future in self._threaded])
        elif self._helpers:
            table, start = np.empty((sum(share.count for _, share in self._helpers), 2), dtype=np.int64), 0
            for helper, share in self._helpers:
                helper.read_into(share, table[start : start + share.count])
                start += share.count
        else:
            table = _stat_here(self._pieces)
        self._pieces, self._helpers, self._threaded = [], [], []
        return table[:, 0], table[:, 1]

    def close(self) -> None:
        for helper, _ in self._helpers:
            helper.stop()
        for future in self._threaded:
            future.cancel()
        self._pieces, self._helpers, self._threaded = [], [], []

    def __enter__(self) -> FileStats:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Share(NamedTuple):
    """A helper's share of the names, as it reads them (see _HELPER), and how many names it holds."""

    data: bytes
    count: int

    def pieces(self) -> list[tuple[bytes, list[bytes]]]:
        """The (folder, names) pairs of the share (a folder is the item with a "/")."""
        pieces: list[tuple[bytes, list[bytes]]] = []
        for item in self.data.split(b"\0"):
            if b"/" in item:
                pieces.append((item, []))
            else:
                pieces[-1][1].append(item)
        return pieces


def reason(errno: int) -> str:
    """Why a file could not be stat-ed, as the quarantine records it."""
    return f"cannot read file: {os.strerror(errno)}"


def _helpers(total: int) -> int:
    """How many helper processes stat ``total`` files: none for a short list, else one per core."""
    if total < PARALLEL_MIN or not sys.executable or os.stat not in os.supports_dir_fd:
        return 0
    return _threads()


def _shares(folders: Iterable[tuple[bytes, list[bytes]]], total: int, parts: int) -> Iterator[_Share]:
    """The names of ``folders`` cut into ``parts`` consecutive shares of about as many (a folder may be cut),
    each made as soon as its names are listed."""
    size = -(-total // parts)
    chunks: list[bytes] = []
    count = 0
    for folder, names in folders:
        folder, start = os.path.abspath(folder), 0
        while start < len(names):
            taken = names[start : start + size - count]
            chunks.append(b"\0".join([folder, *taken]))
            start, count = start + len(taken), count + len(taken)
            if count == size:
                yield _Share(b"\0".join(chunks), count)
                chunks, count = [], 0
    if count:
        yield _Share(b"\0".join(chunks), count)


def _stat_here(share: list[tuple[bytes, list[bytes]]]) -> np.ndarray:
    """The (size, mtime or errno) of each name of ``share``, stat-ed by this process."""
    tables = [fsscan.stat_names(folder, fsscan.names_array(names)) for folder, names in share]
    return np.concatenate(tables) if tables else np.zeros((0, 2), dtype=np.int64)


def _threads() -> int:
    return max(1, min(os.cpu_count() or 1, MAX_HELPERS))


def _threaded(folders: Iterable[tuple[bytes, list[bytes]]]) -> list[Future]:
    """The stats of ``folders`` as futures, made by threads (one per core) a piece of THREAD_NAMES names at a
    time, in order."""
    pool, futures = ThreadPoolExecutor(_threads()), []
    try:
        for folder, names in folders:
            folder = os.path.abspath(folder)
            for start in range(0, len(names), THREAD_NAMES):
                piece = fsscan.names_array(names[start : start + THREAD_NAMES])
                futures.append(pool.submit(fsscan.stat_names, folder, piece))
    finally:
        pool.shutdown(wait=False)  # the pieces submitted are still stat-ed, then its threads end
    return futures


class _Helper:
    """A helper process stat-ing one share; its input is written from a thread while this process works."""

    def __init__(self, process: subprocess.Popen | None, feeder: threading.Thread | None):
        self.process, self.feeder = process, feeder

    @classmethod
    def start(cls, share: _Share) -> _Helper:
        command = [sys.executable, "-I", "-S", "-c", _HELPER]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError:
            return cls(None, None)
        feeder = threading.Thread(target=_feed, args=(process, share.data), daemon=True)
        feeder.start()
        return cls(process, feeder)

    def read_into(self, share: _Share, out: np.ndarray) -> None:
        """Read the helper's table for ``share`` into ``out`` (int64 (share.count, 2)), or make it here when
        the helper failed."""
        if self.process is None or not self._read_all(memoryview(out).cast("B")):
            out[:] = _stat_here(share.pieces())
        elif sys.byteorder != "little":  # the helper writes little-endian
            out.byteswap(inplace=True)

    def _read_all(self, view: memoryview) -> bool:
        """Fill ``view`` with the helper's output; whether it wrote exactly that much and ended well."""
        got, stdout = 0, self.process.stdout
        while got < len(view):
            count = stdout.readinto(view[got:])
            if not count:
                break
            got += count
        extra = stdout.read()
        stdout.close()
        self.feeder.join()
        return self.process.wait() == 0 and got == len(view) and not extra

    def stop(self) -> None:
        """End the helper, its result unread."""
        if self.process is not None:
            self.process.kill()
            self.process.stdout.close()
            self.feeder.join()
            self.process.wait()


def _feed(process: subprocess.Popen, data: bytes) -> None:
    try:
        process.stdin.write(data)
        process.stdin.close()
    except OSError:  # the helper died; its result says so
        pass


# Writes MAGIC, then reads requests "<qqq" (folder length, names, width) + folder + names as fixed-width, NUL-padded
# records, until a request of -1 names or the end of its input; answers each with, per name, its size
# and mtime in ns as two little-endian int64 (or -1 and the errno), flushed at once.
_STREAM_HELPER = r"""
import os, struct, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
head, pack = struct.Struct("<qqq"), struct.Struct("<qq").pack
out.write(MAGIC)
while True:
    raw = inp.read(head.size)
    if len(raw) < head.size:
        break
    length, n, width = head.unpack(raw)
    if n < 0:
        break
    folder, names, answer = inp.read(length), inp.read(n * width), bytearray()
    try:
        fd, err = os.open(folder, os.O_RDONLY | os.O_DIRECTORY), 0
    except OSError as exc:
        fd, err = None, exc.errno or 0
    for i in range(n):
        if fd is None:
            answer += pack(-1, err)
            continue
        try:
            st = os.stat(names[i * width : (i + 1) * width].rstrip(b"\0"), dir_fd=fd)
        except OSError as exc:
            answer += pack(-1, exc.errno or 0)
            continue
        answer += pack(st.st_size, st.st_mtime_ns)
    if fd is not None:
        os.close(fd)
    out.write(answer)
    out.flush()
"""


_MAGIC = b"fcstat01"  # what a stream helper says first: a program that answers otherwise is not one


class StatStream:
    """Files stat-ed a piece at a time as a walk lists them: :meth:`submit` a folder's names (fixed-width
    bytes), :meth:`take` the size and mtime of the earliest piece not taken yet (as :meth:`FileStats.result`
    gives them). Where :mod:`featcache.extraction.fsscan` is compiled, threads (one per core) stat the pieces
    while this process goes on. Without it, past the first ``parallel_min`` names, helper processes (one per
    core, started then and kept) do (at once when ``expected``, the names foreseen, are more); before, or
    where a helper fails, this process does."""

    def __init__(self, parallel_min: int | None = None, expected: int = 0):
        self._pending: deque = deque()  # (helper, future or None, folder, names) per piece, in order
        self._helpers: list[_StreamHelper] | None = None
        self._threads: ThreadPoolExecutor | None = None
        self._next, self._listed = 0, expected
        self._min = PARALLEL_MIN if parallel_min is None else parallel_min

    def submit(self, folder: bytes, names: np.ndarray) -> None:
        """Stat ``names`` (bytes (k,)) of ``folder`` (a full path)."""
        if fsscan.native is not None:
            self._threads = self._threads or ThreadPoolExecutor(_threads())
            self._pending.append((None, self._threads.submit(fsscan.stat_names, folder, names), folder, names))
            return
        self._listed += len(names)
        helper = self._helper() if self._listed > self._min else None
        if helper is not None and not helper.send(folder, names):
            helper = None
        self._pending.append((helper, None, folder, names))

    def take(self) -> tuple[np.ndarray, np.ndarray]:
        """Size and mtime (int64 (k,) each) of the earliest piece submitted and not taken yet."""
        helper, future, folder, names = self._pending.popleft()
        if future is not None:
            table = future.result()
            return table[:, 0], table[:, 1]
        table = np.empty((len(names), 2), dtype=np.int64)
        if helper is None or not helper.read_into(table):
            table = fsscan.stat_names(folder, names)
        elif sys.byteorder != "little":
            table.byteswap(inplace=True)
        return table[:, 0], table[:, 1]

    def close(self) -> None:
        for helper in self._helpers or []:
            helper.stop()
        if self._threads is not None:
            self._threads.shutdown(cancel_futures=True)
        self._helpers, self._threads, self._pending = [], None, deque()

    def __enter__(self) -> StatStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _helper(self) -> _StreamHelper | None:
        if self._helpers is None:
            count = _helpers(max(self._listed, PARALLEL_MIN))
            self._helpers = [helper for helper in (_StreamHelper.start() for _ in range(count)) if helper is not None]
        if not self._helpers:
            return None
        self._next = (self._next + 1) % len(self._helpers)
        return self._helpers[self._next]


class _StreamHelper:
    """A helper process stat-ing the pieces sent to it, in order; a thread writes them to it, so that
    this process never waits on a full pipe while the helper waits for its answers to be read."""

    def __init__(self, process: subprocess.Popen):
        self.process, self.failed, self._greeted = process, False, False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._feeder = threading.Thread(target=self._feed, daemon=True)
        self._feeder.start()

    @classmethod
    def start(cls) -> _StreamHelper | None:
        command = [sys.executable, "-I", "-S", "-c", f"MAGIC = {_MAGIC!r}\n{_STREAM_HELPER}"]
        try:
            process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError:
            return None
        return cls(process)

    def send(self, folder: bytes, names: np.ndarray) -> bool:
        if self.failed:
            return False
        names = np.ascontiguousarray(names)
        width = max(names.dtype.itemsize, 1) if len(names) else 1
        self._queue.put(struct.pack("<qqq", len(folder), len(names), width) + folder + names.tobytes())
        return True

    def read_into(self, table: np.ndarray) -> bool:
        """Read the answer of the earliest piece sent into ``table`` (int64 (k, 2)); False when the helper
        failed (it is then sent nothing more)."""
        if not self.failed and not self._greeted:
            said = bytearray(len(_MAGIC))
            self.failed = not self._read(memoryview(said)) or bytes(said) != _MAGIC
            self._greeted = True
        if self.failed:
            return False
        self.failed = not self._read(memoryview(table).cast("B"))
        return not self.failed

    def _read(self, view: memoryview) -> bool:
        got = 0
        while got < len(view):
            count = self.process.stdout.readinto(view[got:])
            if not count:
                return False
            got += count
        return True

    def stop(self) -> None:
        self._queue.put(None)
        self.process.kill()  # (what it was still sent is not wanted: its feeder's write fails and it ends)
        self._feeder.join()
        self.process.stdout.close()
        self.process.wait()

    def _feed(self) -> None:
        while (data := self._queue.get()) is not None:
            try:
                self.process.stdin.write(data)
                self.process.stdin.flush()
            except OSError:  # the helper died; its answer says so
                self.failed = True
                return
        try:
            self.process.stdin.close()
        except OSError:
            pass
