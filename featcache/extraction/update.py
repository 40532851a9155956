"""An update of a cache from a walked data folder, a folder at a time, alongside its existing entry file.

A cache of millions of rows is updated in two walks of the data folder, each read alongside the
existing entry file a block of rows at a time (the walk and the entry file list their rows in the
same order: by split, class, folder and name). The first walk stats each file (helper processes,
a few pieces ahead) and sets aside what must be read: files the cache lacks or that changed. Those
are computed; the second walk lists the same folders again (by name only, checked against a digest
of the first listing) and writes the new entry file a block of rows at a time, each row taken from
the existing entry file or from what was computed. Nothing is held per row from one walk to the
next, only the files read (and those that could not be), per folder a digest of its names, and per
shard how many rows still use it. What is held at once is a piece of rows and the names of the
folder being walked (the walk sorts them); the index of the existing content hashes (12 bytes a
row) is made only when files are read, to find copies of cached images.

A cache whose rows are not in the walk's order (made from a manifest, by another layout or a former
format), one with augmented views, and an update that makes views take :mod:`featcache.extraction.run`'s
path, which holds the listing whole: :class:`NotInWalkOrder` tells it so before anything is written.
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featcache.cache.layout import (
    FORMAT_VERSION,
    INDEX,
    MTIME,
    PATH,
    ROW,
    SHA256,
    SIZE,
    SPLITS,
    Cache,
    EntryWriter,
    Locations,
    QuarantineEntry,
    Rows,
    bytes_column,
    entry_blocks,
)
from featcache.cache.shards import ShardWriter, VectorPool
from featcache.extraction.dataset import Folder, Sample, Walk, names_digest_of, splits_for_hashes
from featcache.extraction.filestat import FileStats, StatStream, reason
from featcache.extraction.pipeline import ListedFile

#: files stat-ed, matched and written at once (what is held of a folder's files at a time, beside its names)
PIECE_ROWS = 1 << 12
#: pieces being stat-ed by helper processes while this process matches earlier ones
AHEAD = 8
#: rows of the existing entry file read at once
READ_ROWS = 1 << 12


class NotInWalkOrder(Exception):
    """The existing cache's rows are not in the order of a walk of the data folder."""


def in_walk_order(old: Cache | None) -> bool:
    """Whether ``old`` (read without its rows) can be updated a folder at a time as far as its header tells:
    it is of this format and its vectors lie in shards (its rows may still not be in the walk's order:
    NotInWalkOrder)."""
    return old is None or (old.attrs.get("format_version") == FORMAT_VERSION and old.locations is not None)


class _Piece(NamedTuple):
    """Consecutive files of a walked folder: its rows ``lo`` to ``hi`` of ``folder.names``."""

    folder: Folder
    key: tuple
    lo: int
    hi: int

    @property
    def last(self) -> bool:
        return self.hi == len(self.folder.names)

    def names(self) -> np.ndarray:
        return self.folder.names[self.lo : self.hi]

    def paths(self) -> np.ndarray:
        return np.char.add(np.bytes_(self.folder.rel), self.names())


def pieces(walk: Walk, folders: Iterable[Folder] | None = None, rows: int | None = None) -> Iterator[_Piece]:
    """The walk's ``folders`` (default: as it walks them) in pieces of at most ``rows`` (default PIECE_ROWS)
    files, in order."""
    rows = rows or PIECE_ROWS
    for folder in _ahead(walk.folders()) if folders is None else folders:
        key = walk.key(folder.rel)
        for lo in range(0, len(folder.names), rows):
            yield _Piece(folder, key, lo, min(lo + rows, len(folder.names)))


class OldRows:
    """The existing cache's rows read a block at a time alongside a walk: :meth:`match` finds, for the
    paths of a piece of a folder, the rows of the same path, passing over (and counting as ``removed``)
    rows of folders the walk has left behind. The rows' ``columns`` are given for the rows matched.
    NotInWalkOrder when the rows turn out not to be in the walk's order."""

    def __init__(self, path: Path | None, n_rows: int, walk: Walk, columns: tuple):
        self._blocks = entry_blocks(path, (PATH, *columns), READ_ROWS) if path is not None and n_rows else iter(())
        self._walk, self._columns = walk, columns
        self._buffer: dict[str, np.ndarray] | None = None
        self._ends = np.zeros(0, dtype=np.int64)  # where each run of rows of one folder ends in the buffer
        self._start = 0  # the existing cache's row of the buffer's first row
        self._done = False
        self._front: tuple[bytes, tuple] | None = None  # folder and key of the buffer's first row
        self._last: tuple | None = None  # key of the last folder passed or matched
        self._last_path = b""
        self.removed = 0

    def match(self, piece: _Piece, paths: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The existing row of each of ``paths`` (sorted; -1: none) and its ``columns`` (zero where none)."""
        found = np.full(len(paths), -1, dtype=np.int64)
        values = {name: None for name in self._columns}
        while True:
            run = self._front_run()
            if run is None:
                break
            folder, key, length, whole = run
            if key < piece.key:
                self._drop(length, removed=True)
                continue
            if key > piece.key:
                break
            if not whole:  # the folder goes on in the next block
                if piece.last or self._buffer[PATH][length - 1] <= paths[-1]:
                    self._fill()
                    continue
            cut = length if piece.last else int(np.searchsorted(self._buffer[PATH][:length], paths[-1], side="right"))
            self._take(cut, paths, found, values)
            break
        return found, {name: v if v is not None else np.zeros(0) for name, v in values.items()}

    def finish(self) -> None:
        """Pass over the rows left: folders the walk no longer has."""
        while self._fill():
            pass
        if self._buffer is not None:
            self.removed += len(self._buffer[PATH])
            self._buffer = None

    def _take(self, cut: int, paths: np.ndarray, found: np.ndarray, values: dict) -> None:
        taken = self._buffer[PATH][:cut]
        if len(taken) and ((len(taken) > 1 and not (taken[1:] > taken[:-1]).all()) or taken[0] <= self._last_path):
            raise NotInWalkOrder("the rows of a folder are not in order by name")
        if len(taken):
            self._last_path = taken[-1]
        pos = np.minimum(np.searchsorted(paths, taken), max(len(paths) - 1, 0))
        hit = np.flatnonzero(paths[pos] == taken) if len(paths) else np.zeros(0, dtype=np.int64)
        found[pos[hit]] = self._start + hit
        for name in self._columns:
            column = self._buffer[name]
            out = np.zeros(len(paths), dtype=column.dtype)
            out[pos[hit]] = column[hit]
            values[name] = out
        self.removed += cut - len(hit)
        self._drop(cut)

    def _front_run(self):
        """(folder, key, rows, whether the buffer holds all of them) of the buffer's first rows, or None."""
        if (self._buffer is None or not len(self._buffer[PATH])) and not self._fill():
            return None
        paths = self._buffer[PATH]
        first = bytes(paths[0])
        folder = first[: first.rfind(b"/") + 1]
        if self._front is None or self._front[0] != folder:
            key = self._walk.key(folder) if folder else None
            if key is None or (self._last is not None and key < self._last):
                raise NotInWalkOrder(f"rows of {os.fsdecode(folder) or 'the top folder'} come out of the walk's order")
            if self._last is None or key != self._last:
                self._last_path = b""
            self._front, self._last = (folder, key), key
        length = int(self._ends[0])
        return folder, self._front[1], length, length < len(paths) or self._done

    def _drop(self, count: int, removed: bool = False) -> None:
        self._buffer = {name: column[count:] for name, column in self._buffer.items()}
        self._ends = self._ends[self._ends > count] - count
        self._start += count
        if removed:
            self.removed += count

    def _fill(self) -> bool:
        """Read the next block into the buffer; False when there is none."""
        if self._done:
            return False
        block = next(self._blocks, None)
        if block is None:
            self._done = True
            return False
        _, block = block
        if self._buffer is None or not len(self._buffer[PATH]):
            self._buffer = block
        else:
            self._buffer = {name: _joined(self._buffer[name], block[name]) for name in block}
        self._ends = _run_ends(self._buffer[PATH])
        return True


def _joined(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "S" and a.dtype.itemsize != b.dtype.itemsize:
        width = max(a.dtype.itemsize, b.dtype.itemsize)
        a, b = a.astype(f"S{width}"), b.astype(f"S{width}")
    return np.concatenate([a, b])


def _run_ends(paths: np.ndarray) -> np.ndarray:
    """Where each run of consecutive paths (fixed-width bytes) of one folder ends: the rows after which
    the folder changes, and the number of paths."""
    n = len(paths)
    if n < 2:
        return np.array([n], dtype=np.int64)
    ends = _folder_ends(paths)
    width = paths.dtype.itemsize
    folders = np.where(np.arange(width) < ends[:, None], paths.view(np.uint8).reshape(n, width), 0)
    changed = (ends[1:] != ends[:-1]) | (folders[1:] != folders[:-1]).any(axis=1)
    return np.append(np.flatnonzero(changed) + 1, n).astype(np.int64)


def _folder_ends(paths: np.ndarray) -> np.ndarray:
    """Per path (fixed-width bytes), the length of its folder part: up to and with its last "/" (0: none)."""
    if not len(paths):
        return np.zeros(0, dtype=np.int64)
    width = paths.dtype.itemsize
    slash = paths.view(np.uint8).reshape(len(paths), width)[:, ::-1] == ord("/")
    return np.where(slash.any(axis=1), width - slash.argmax(axis=1), 0)


@dataclass
class Survey:
    """What the first walk found: the files to read (``new``, in listing order, with ``new_at``: each one's
    path -> its position), those that could not be stat-ed (``unreadable``, with their paths ``skipped``),
    how many rows of each existing shard are reused, and the rows listed, reused and removed."""

    new: list[ListedFile] = field(default_factory=list)
    new_at: dict[bytes, int] = field(default_factory=dict)
    unreadable: list[QuarantineEntry] = field(default_factory=list)
    skipped: set[bytes] = field(default_factory=set)
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    folders: list[tuple[Folder, str]] = field(default_factory=list)  # (folder without names, digest of them)
    listed: int = 0
    reused: int = 0
    removed: int = 0
    width: int = 1  # the longest path listed


def survey(walk: Walk, old: Cache | None, intact: np.ndarray, assume_unchanged: bool) -> Survey:
    """Walk the data folder alongside the existing cache ``old`` (its shards ``intact``): each file's size and
    mtime (stat-ed by helper processes a few pieces ahead, or with ``assume_unchanged`` taken from the row
    of the same path), and whether the row of its path can be reused (same size and mtime, shard intact)."""
    found = Survey(used=np.zeros(len(intact), dtype=np.int64))
    rows = OldRows(
        old.path if old is not None else None, old.n_rows if old is not None else 0, walk, (SIZE, MTIME, INDEX)
    )
    root, waiting = os.fsencode(walk.root), deque()
    with StatStream(expected=old.n_rows if old is not None else 0) as stats:
        for piece in pieces(walk):
            if not assume_unchanged:
                stats.submit(os.path.join(root, piece.folder.rel), piece.names())
            waiting.append(piece)
            if len(waiting) > AHEAD:
                _survey_piece(waiting.popleft(), stats, rows, intact, walk, found, assume_unchanged)
        while waiting:
            _survey_piece(waiting.popleft(), stats, rows, intact, walk, found, assume_unchanged)
    rows.finish()
    found.removed = rows.removed
    return found


def _survey_piece(piece: _Piece, stats, rows: OldRows, intact, walk: Walk, found: Survey, assume_unchanged: bool):
    if piece.lo == 0:
        folder = piece.folder  # kept without its names (a slice of them would keep them all)
        found.folders.append((folder._replace(names=np.zeros(0, folder.names.dtype)), names_digest_of(folder.names)))
    paths = piece.paths()
    row, old = rows.match(piece, paths)
    size, mtime = _assumed(walk, piece, paths, row, old) if assume_unchanged else stats.take()
    _note(piece, paths, size, mtime, row, old, intact, walk, found)


def _assumed(walk: Walk, piece: _Piece, paths, row, old):
    """Size and mtime from the existing rows of the same path; the other files stat-ed here."""
    size, mtime = old[SIZE].astype(np.int64), old[MTIME].astype(np.int64)
    if not len(size):
        size, mtime = np.full(len(paths), -1, dtype=np.int64), np.zeros(len(paths), dtype=np.int64)
    unknown = np.flatnonzero(row < 0)
    if len(unknown):
        folder = os.path.join(os.fsencode(walk.root), piece.folder.rel)
        names = piece.names()[unknown].tolist()
        with FileStats.start([(folder, names)], len(names)) as stats:
            size[unknown], mtime[unknown] = stats.result()
    return size, mtime


def _note(piece: _Piece, paths, size, mtime, row, old, intact, walk: Walk, found: Survey) -> None:
    """Count a piece's rows and set aside those to read (or that cannot be)."""
    found.listed += len(paths)
    found.width = max(found.width, paths.dtype.itemsize)
    matched = row >= 0
    reused = matched.copy()
    if matched.any():
        shard = old[INDEX].astype(np.int64)
        reused &= (old[SIZE] == size) & (old[MTIME] == mtime) & intact[shard] & (size >= 0)
        found.used += np.bincount(shard[reused], minlength=len(found.used))
    found.reused += int(np.count_nonzero(reused))
    split = piece.folder.split.decode() or None
    label = walk.class_names[piece.folder.label]
    for i in np.flatnonzero(~reused).tolist():
        path = bytes(paths[i])
        if size[i] < 0:
            found.unreadable.append(QuarantineEntry(os.fsdecode(path), reason(int(mtime[i]))))
            found.skipped.add(path)
            continue
        found.new_at[path] = len(found.new)
        found.new.append(ListedFile(Sample(os.fsdecode(path), label, split), int(size[i]), int(mtime[i])))


@dataclass
class Settled:
    """Where the rows of the new entry file lie: its shard ``files`` (with their rows and bytes), the position
    there of each existing shard (-1: no row uses it any more), and for each file of ``Survey.new`` its
    content hash, size, mtime, shard (-1: not kept: unreadable, or a bad image) and row there."""

    files: list[str]
    file_rows: list[int]
    file_bytes: list[int]
    old_index: np.ndarray
    sha256: np.ndarray
    size: np.ndarray
    mtime_ns: np.ndarray
    index: np.ndarray
    row: np.ndarray
    dim: int

    @property
    def kept(self) -> int:
        return int(np.count_nonzero(self.index >= 0))

    def locations(self) -> Locations:
        """The shard files (no per-row arrays): what :meth:`EntryWriter.finish` takes."""
        return Locations(self.files, self.file_rows, self.file_bytes, None, None, self.dim)


def settle(found: Survey, hashes: list[str], pool: VectorPool, writer: ShardWriter, old: Cache | None):
    """The :class:`Settled` of an update whose new files have the content ``hashes`` ("" where one could not be
    read), and the quarantine entries of those that are bad images."""
    bad, kept = [], []
    for i, sha in enumerate(hashes):
        if sha and sha in pool.quarantine and sha not in pool:
            bad.append(QuarantineEntry(found.new[i].sample.relpath, pool.quarantine[sha], sha))
        elif sha:
            kept.append(i)
    m = len(found.new)
    sha256 = np.zeros(m, dtype="S64")
    sha256[kept] = bytes_column([hashes[i] for i in kept]) if kept else sha256[:0]
    located = pool.locate(sha256[kept], writer) if kept else None
    old_files = old.locations if old is not None else Locations([], [], [], None, None, 0)
    used = np.flatnonzero(found.used > 0).tolist()
    files = [old_files.files[i] for i in used]
    rows, sizes = [old_files.file_rows[i] for i in used], [old_files.file_bytes[i] for i in used]
    old_index = np.full(len(old_files.files), -1, dtype=np.int32)
    old_index[used] = np.arange(len(used), dtype=np.int32)
    index, row = np.full(m, -1, dtype=np.int32), np.full(m, -1, dtype=np.int64)
    if located is not None:
        at = {name: i for i, name in enumerate(files)}
        for name, count, size in zip(located.files, located.file_rows, located.file_bytes):
            if name not in at:
                at[name] = len(files)
                files.append(name)
                rows.append(count)
                sizes.append(size)
        position = np.array([at[name] for name in located.files], dtype=np.int32)
        index[kept], row[kept] = position[np.asarray(located.index, dtype=np.int64)], located.row
    size = np.array([item.size for item in found.new], dtype=np.int64).reshape(m)
    mtime = np.array([item.mtime_ns for item in found.new], dtype=np.int64).reshape(m)
    dim = pool.dim or old_files.dim or 0
    return Settled(files, rows, sizes, old_index, sha256, size, mtime, index, row, dim), bad


@dataclass
class Written:
    """The rows an entry file got: how many, per split, and per split and class."""

    rows: int = 0
    per_split: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SPLITS, 0))
    per_class: dict[str, dict[str, int]] = field(default_factory=dict)

    def count(self, split: np.ndarray, label: int, class_name: str) -> None:
        self.rows += len(split)
        names, counts = np.unique(split, return_counts=True)
        for name, count in zip(names.tolist(), counts.tolist()):
            name = name.decode()
            self.per_split[name] += count
            per = self.per_class.setdefault(name, {})
            per[class_name] = per.get(class_name, 0) + count


def write_rows(walk: Walk, old: Cache | None, found: Survey, settled: Settled, writer: EntryWriter, fractions):
    """Walk the data folder again and give ``writer`` the rows of the new entry file in listing order: a file
    of ``found.new`` where it was kept, else the existing row of its path where its shard is kept; files
    that appeared since the first walk are left to the next update. ``fractions`` are the validation and
    test fractions of a split taken from the content hash. A :class:`Written`."""
    rows = OldRows(old.path if old is not None else None, old.n_rows if old is not None else 0, walk,
                   (SHA256, SIZE, MTIME, INDEX, ROW))  # fmt: skip
    new_paths = np.array(sorted(found.new_at), dtype=bytes) if found.new_at else None
    skipped = np.array(sorted(found.skipped), dtype=bytes) if found.skipped else None
    done = Written()
    for piece in pieces(walk, walk.again(found.folders)):
        paths = piece.paths()
        row, existing = rows.match(piece, paths)
        block, index, where = _piece_rows(piece, paths, row, existing, found, settled, new_paths, skipped)
        if not len(index):
            continue
        if not piece.folder.split:
            block.split = splits_for_hashes(block.sha256, *fractions)
        writer.add(block, index, where)
        done.count(block.split, piece.folder.label, walk.class_names[piece.folder.label])
    rows.finish()
    return done


def _piece_rows(piece: _Piece, paths, row, existing, found: Survey, settled: Settled, new_paths, skipped):
    """The rows of a piece that the new entry file keeps (:class:`Rows`, split b"" where the hash decides),
    with the shard and row of each one's vector."""
    n = len(paths)
    position = np.full(n, -1, dtype=np.int64)
    fresh = _among(paths, new_paths)
    for i in np.flatnonzero(fresh).tolist():
        position[i] = found.new_at[bytes(paths[i])]
    gone = _among(paths, skipped)
    reuse = (row >= 0) & ~fresh & ~gone
    if reuse.any():
        reuse[reuse] = settled.old_index[existing[INDEX][reuse].astype(np.int64)] >= 0
    made = fresh.copy()
    made[fresh] = settled.index[position[fresh]] >= 0
    keep = (reuse | made) & (np.char.str_len(paths) <= found.width)  # (a path longer: a file that appeared since)
    k, reused, new = np.flatnonzero(keep), reuse[keep], position[keep]
    sha = np.zeros(len(k), dtype="S64")
    size, mtime = np.zeros(len(k), dtype=np.int64), np.zeros(len(k), dtype=np.int64)
    index, where = np.zeros(len(k), dtype=np.int32), np.zeros(len(k), dtype=np.int64)
    if reused.any():
        at = k[reused]
        sha[reused], size[reused], mtime[reused] = existing[SHA256][at], existing[SIZE][at], existing[MTIME][at]
        index[reused] = settled.old_index[existing[INDEX][at].astype(np.int64)]
        where[reused] = existing[ROW][at]
    if (~reused).any():
        at = new[~reused]
        sha[~reused], size[~reused], mtime[~reused] = settled.sha256[at], settled.size[at], settled.mtime_ns[at]
        index[~reused], where[~reused] = settled.index[at], settled.row[at]
    split = np.full(len(k), piece.folder.split, dtype="S10")
    label = np.full(len(k), piece.folder.label, dtype=np.int32)
    return Rows(path=paths[k], sha256=sha, label=label, split=split, size=size, mtime_ns=mtime), index, where


def _among(paths: np.ndarray, chosen: np.ndarray | None) -> np.ndarray:
    """Which of ``paths`` (sorted) are among ``chosen`` (sorted, or None: none)."""
    if chosen is None or not len(paths):
        return np.zeros(len(paths), dtype=bool)
    lo, hi = (
        np.searchsorted(chosen, [paths[0], paths[-1]], side="left")[0],
        np.searchsorted(chosen, paths[-1], side="right"),
    )
    if lo >= hi:  # none of them in the range of these paths
        return np.zeros(len(paths), dtype=bool)
    return np.isin(paths, chosen[lo:hi])


def _ahead(items: Iterator, count: int = 2) -> Iterator:
    """``items``, made by a thread up to ``count`` ahead of their use (listing a folder mostly waits on the
    file system, while this process has the previous one to match). The thread stops when they are no
    longer wanted."""
    made: queue.Queue = queue.Queue(count)
    end, stop = object(), threading.Event()

    def give(entry) -> bool:
        while not stop.is_set():
            try:
                made.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def make() -> None:
        try:
            for item in items:
                if not give((item, None)):
                    return
        except BaseException as exc:  # given to the reader
            give((None, exc))
            return
        give((end, None))

    maker = threading.Thread(target=make, daemon=True)
    maker.start()
    try:
        while True:
            item, error = made.get()
            if error is not None:
                raise error
            if item is end:
                break
            yield item
    finally:
        stop.set()
        maker.join()
