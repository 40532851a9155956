"""An update of a cache from a walked data folder, a folder at a time, alongside its existing entry file.

A cache of millions of rows is updated in one walk of the data folder and two passes over the existing
entry file, each read a block of rows at a time (the walk and the entry file list their rows in the
same order: by split, class, folder and name). The walk stats each file (helper processes, a few
pieces ahead), matches it with the existing row of its path and sets aside what must be read: files
the cache lacks or that changed. Those are computed; the second pass writes the new entry file a
block of rows at a time: the existing rows that are kept, with the computed files merged in where the
walk found them. Nothing is held per row from the walk to the second pass, only the files read (each
with the existing row it comes before), those that could not be, the runs of existing rows that are
left out, and per shard how many rows still use it. What is held at once is a piece of rows and the
names of the folder being walked (the walk sorts them); the index of the existing content hashes (12
bytes a row) is made only when files are read, to find copies of cached images.

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
    LABEL,
    MTIME,
    PATH,
    ROW,
    SHA256,
    SIZE,
    SPLIT,
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
from featcache.extraction.dataset import Folder, Sample, Walk, splits_for_hashes
from featcache.extraction.filestat import FileStats, StatStream, reason
from featcache.extraction.pipeline import ListedFile

#: files stat-ed, matched and written at once (what is held of a folder's files at a time, beside its names)
PIECE_ROWS = 1 << 12
#: pieces being stat-ed by helper processes while this process matches earlier ones
AHEAD = 8
#: rows of the existing entry file read at once while walking
READ_ROWS = 1 << 12
#: rows of the existing entry file read at once, and written with the files merged in, by the second pass
MERGE_ROWS = 1 << 13


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
        self._taken: tuple[int, np.ndarray] | None = None  # the first row and paths the last match took
        self.removed = 0

    def match(self, piece: _Piece, paths: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The existing row of each of ``paths`` (sorted; -1: none) and its ``columns`` (zero where none)."""
        found = np.full(len(paths), -1, dtype=np.int64)
        self._taken = None
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

    def before(self, paths: np.ndarray) -> np.ndarray:
        """For some of the paths of the last :meth:`match`, the existing row each one comes before in the
        walk's order (its own row where it has one), int64."""
        if self._taken is None:
            return np.full(len(paths), self._start, dtype=np.int64)
        start, taken = self._taken
        return start + np.searchsorted(taken, paths).astype(np.int64)

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
        self._taken = (self._start, taken)
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
            self._buffer = {name: _joined([self._buffer[name], block[name]]) for name in block}
        self._ends = _run_ends(self._buffer[PATH])
        return True


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


class Dropped:
    """The existing rows an update leaves out (all but those it reuses), as runs of consecutive rows: told the
    rows kept in order (:meth:`keep`), then the number of rows (:meth:`finish`); :meth:`kept` tells which
    rows of a block are kept. What it holds grows with the runs, one for each stretch of rows removed or
    changed, not with the rows."""

    def __init__(self):
        self._starts: list[np.ndarray] = []
        self._stops: list[np.ndarray] = []
        self._next = 0  # the row after the last one kept

    def keep(self, rows: np.ndarray) -> None:
        """Rows kept (increasing, after those kept before)."""
        if not len(rows):
            return
        bounds = np.concatenate(([self._next - 1], rows)).astype(np.int64)
        if not (bounds[1:] > bounds[:-1]).all():
            raise NotInWalkOrder("the existing rows are not met in order")
        gap = np.flatnonzero(bounds[1:] - bounds[:-1] > 1)
        if len(gap):
            self._starts.append(bounds[gap] + 1)
            self._stops.append(bounds[gap + 1])
        self._next = int(rows[-1]) + 1

    def finish(self, n_rows: int) -> None:
        """The rows after the last one kept, up to ``n_rows``, are left out too."""
        if self._next < n_rows:
            self._starts.append(np.array([self._next], dtype=np.int64))
            self._stops.append(np.array([n_rows], dtype=np.int64))
        self._next = max(self._next, n_rows)
        starts, stops = _joined_runs(self._starts), _joined_runs(self._stops)
        self._starts, self._stops = [starts], [stops]

    @property
    def runs(self) -> int:
        return sum(len(starts) for starts in self._starts)

    def kept(self, start: int, stop: int) -> np.ndarray:
        """Which rows ``start`` to ``stop`` are kept (bool (stop - start,)); after :meth:`finish`."""
        starts, stops = (self._starts[0], self._stops[0]) if self._starts else (np.zeros(0, np.int64),) * 2
        lo, hi = np.searchsorted(stops, start, side="right"), np.searchsorted(starts, stop, side="left")
        change = np.zeros(stop - start + 1, dtype=np.int64)
        np.add.at(change, np.clip(starts[lo:hi], start, stop) - start, 1)
        np.add.at(change, np.clip(stops[lo:hi], start, stop) - start, -1)
        return np.cumsum(change[:-1]) == 0


def _joined_runs(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


@dataclass
class Survey:
    """What the walk found: the files to read (``new``, in listing order, with ``before``: the existing row
    each one comes before in that order, its own where it has one), those that could not be stat-ed
    (``unreadable``), the existing rows left out (``dropped``), how many rows of each existing shard are
    reused, and the rows listed, reused and removed."""

    new: list[ListedFile] = field(default_factory=list)
    before: list[np.ndarray] = field(default_factory=list)
    unreadable: list[QuarantineEntry] = field(default_factory=list)
    dropped: Dropped = field(default_factory=Dropped)
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    listed: int = 0
    reused: int = 0
    removed: int = 0
    width: int = 1  # the longest path listed

    def new_before(self) -> np.ndarray:
        """The existing row each file of ``new`` comes before, int64 (len(new),)."""
        return _joined_runs(self.before)


def survey(walk: Walk, old: Cache | None, intact: np.ndarray, assume_unchanged: bool) -> Survey:
    """Walk the data folder alongside the existing cache ``old`` (its shards ``intact``): each file's size and
    mtime (stat-ed by helper processes a few pieces ahead, or with ``assume_unchanged`` taken from the row
    of the same path), and whether the row of its path can be reused (same size and mtime, shard intact)."""
    found = Survey(used=np.zeros(len(intact), dtype=np.int64))
    n_old = old.n_rows if old is not None else 0
    rows = OldRows(old.path if old is not None else None, n_old, walk, (SIZE, MTIME, INDEX))
    root, waiting = os.fsencode(walk.root), deque()
    with StatStream(expected=n_old) as stats:
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
    found.dropped.finish(n_old)
    return found


def _survey_piece(piece: _Piece, stats, rows: OldRows, intact, walk: Walk, found: Survey, assume_unchanged: bool):
    paths = piece.paths()
    row, old = rows.match(piece, paths)
    size, mtime = _assumed(walk, piece, paths, row, old) if assume_unchanged else stats.take()
    _note(piece, paths, size, mtime, row, old, intact, rows, walk, found)


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


def _note(piece: _Piece, paths, size, mtime, row, old, intact, rows: OldRows, walk: Walk, found: Survey) -> None:
    """Count a piece's rows, note the existing ones kept, and set aside those to read (or that cannot be)."""
    found.listed += len(paths)
    found.width = max(found.width, paths.dtype.itemsize)
    matched = row >= 0
    reused = matched.copy()
    if matched.any():
        shard = old[INDEX].astype(np.int64)
        reused &= (old[SIZE] == size) & (old[MTIME] == mtime) & intact[shard] & (size >= 0)
        found.used += np.bincount(shard[reused], minlength=len(found.used))
    found.reused += int(np.count_nonzero(reused))
    found.dropped.keep(row[reused])
    split = piece.folder.split.decode() or None
    label = walk.class_names[piece.folder.label]
    unreadable = ~reused & (size < 0)
    for i in np.flatnonzero(unreadable).tolist():
        found.unreadable.append(QuarantineEntry(os.fsdecode(bytes(paths[i])), reason(int(mtime[i]))))
    read = np.flatnonzero(~reused & ~unreadable)
    if not len(read):
        return
    found.before.append(rows.before(paths[read]))
    for i in read.tolist():
        found.new.append(ListedFile(Sample(os.fsdecode(bytes(paths[i])), label, split), int(size[i]), int(mtime[i])))


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
    """The rows an entry file got: how many of each class in each split (int64 (len(SPLITS), classes))."""

    counts: np.ndarray
    class_names: list[str]

    @classmethod
    def of(cls, class_names: list[str]) -> Written:
        return cls(np.zeros((len(SPLITS), len(class_names)), dtype=np.int64), class_names)

    def count(self, split: np.ndarray, label: np.ndarray) -> None:
        for i, name in enumerate(SPLITS):
            self.counts[i] += np.bincount(label[split == name.encode()], minlength=len(self.class_names))

    @property
    def rows(self) -> int:
        return int(self.counts.sum())

    @property
    def per_split(self) -> dict[str, int]:
        return {name: int(total) for name, total in zip(SPLITS, self.counts.sum(axis=1))}

    @property
    def per_class(self) -> dict[str, dict[str, int]]:
        return {
            name: {self.class_names[j]: int(counts[j]) for j in np.flatnonzero(counts)}
            for name, counts in zip(SPLITS, self.counts)
        }


#: the existing entry file's columns that the second pass reads
_MERGED = (PATH, SHA256, LABEL, SPLIT, SIZE, MTIME, INDEX, ROW)


def write_rows(walk: Walk, old: Cache | None, found: Survey, settled: Settled, writer: EntryWriter, fractions):
    """Give ``writer`` the rows of the new entry file in the walk's order: the existing rows kept (read a
    block at a time, their labels and shards renumbered) with the files of ``found.new`` that were kept
    merged in where the walk found them. Files that appeared or went after the walk are left to the next
    update. ``fractions`` are the validation and test fractions of a split taken from the content hash.
    A :class:`Written`."""
    n_old = old.n_rows if old is not None else 0
    merge = _Merge(walk, old, found, settled, fractions)
    done = Written.of(walk.class_names)
    blocks = entry_blocks(old.path, _MERGED, MERGE_ROWS) if n_old else iter(())
    for start, block in blocks:
        stop = start + len(block[PATH])
        _write(merge.block(start, stop, block, last=stop == n_old), writer, done)
    while merge.new_left():
        _write(merge.block(n_old, n_old, None, last=True), writer, done)
    return done


def _write(rows: tuple[Rows, np.ndarray, np.ndarray], writer: EntryWriter, done: Written) -> None:
    block, index, where = rows
    if len(index):
        writer.add(block, index, where)
        done.count(block.split, block.label)


class _Merge:
    """The rows of the new entry file a block of existing rows at a time, with the new files that come
    among (or, for the last block, after) them."""

    def __init__(self, walk: Walk, old: Cache | None, found: Survey, settled: Settled, fractions):
        self.found, self.settled, self.fractions = found, settled, fractions
        self.hashed = walk.layout != "split-folders"  # each row's split comes from its content hash
        self.kept_new = np.flatnonzero(settled.index >= 0)
        self.new_before = found.new_before()[self.kept_new] if len(self.kept_new) else np.zeros(0, np.int64)
        self.taken = 0  # new files merged so far
        label_of = {name: i for i, name in enumerate(walk.class_names)}
        old_names = old.class_names if old is not None else []
        self.label_of_old = np.array([label_of.get(name, -1) for name in old_names], dtype=np.int32)
        self.label_of_new = label_of

    def new_left(self) -> bool:
        return self.taken < len(self.kept_new)

    def block(self, start: int, stop: int, block: dict | None, last: bool):
        """The rows (:class:`Rows`), shards and rows there of the existing rows ``start`` to ``stop`` that are
        kept (``block``: their columns) and of the new files that come before row ``stop`` (all that are
        left when ``last``; at most MERGE_ROWS of them without a block)."""
        end = len(self.kept_new) if last else int(np.searchsorted(self.new_before, stop, side="left"))
        if block is None:
            end = min(end, self.taken + MERGE_ROWS)
        new, at = self.kept_new[self.taken : end], self.new_before[self.taken : end]
        self.taken = end
        parts, keys = [self._new(new)], [2 * at]  # a new file comes before the existing row it names
        if block is not None:
            kept, numbers = self._old(start, stop, block)
            parts.append(kept)
            keys.append(2 * numbers + 1)
        rows, index, where = _ordered(parts, np.argsort(np.concatenate(keys), kind="stable"))
        if self.hashed and len(rows):
            rows.split = splits_for_hashes(rows.sha256, *self.fractions)
        return rows, index, where

    def _old(self, start: int, stop: int, block: dict):
        """The kept rows of an existing block as (rows, their row numbers)."""
        keep = np.flatnonzero(self.found.dropped.kept(start, stop))
        label = self.label_of_old[block[LABEL][keep].astype(np.int64)]
        rows = Rows(
            path=block[PATH][keep], sha256=block[SHA256][keep], label=label, split=block[SPLIT][keep],
            size=block[SIZE][keep].astype(np.int64), mtime_ns=block[MTIME][keep].astype(np.int64),
        )  # fmt: skip
        index = self.settled.old_index[block[INDEX][keep].astype(np.int64)]
        return (rows, index, block[ROW][keep].astype(np.int64)), start + keep

    def _new(self, new: np.ndarray):
        """The rows of the new files ``new`` (positions in ``found.new``)."""
        files = [self.found.new[i] for i in new.tolist()]
        settled = self.settled
        rows = Rows(
            path=bytes_column([os.fsencode(item.sample.relpath) for item in files]) if files else np.zeros(0, "S1"),
            sha256=settled.sha256[new],
            label=np.array([self.label_of_new[item.sample.label] for item in files], dtype=np.int32).reshape(-1),
            split=bytes_column([item.sample.split or "" for item in files]) if files else np.zeros(0, "S1"),
            size=settled.size[new],
            mtime_ns=settled.mtime_ns[new],
        )
        return rows, settled.index[new], settled.row[new]


def _ordered(parts: list[tuple[Rows, np.ndarray, np.ndarray]], order: np.ndarray):
    """The rows of ``parts`` joined, then taken in ``order``."""
    names = ("path", "sha256", "label", "split", "size", "mtime_ns")
    joined = {name: _joined([getattr(part[0], name) for part in parts])[order] for name in names}
    index = np.concatenate([part[1] for part in parts]).astype(np.int32)[order]
    where = np.concatenate([part[2] for part in parts]).astype(np.int64)[order]
    return Rows(**joined), index, where


def _joined(columns: list[np.ndarray]) -> np.ndarray:
    """``columns`` one after the other; bytes columns as wide as the widest (empty ones left out)."""
    columns = [c for c in columns if len(c)] or columns[:1]
    if columns[0].dtype.kind == "S":
        width = max(c.dtype.itemsize for c in columns)
        columns = [c.astype(f"S{width}") if c.dtype.itemsize != width else c for c in columns]
    return np.concatenate(columns)


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
