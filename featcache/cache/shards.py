"""Where a cache's vectors live: immutable shard files, each committed whole, and the pool that finds each vector.

A shard is a small HDF5 file ``<cache>.shards/<hash of its bytes>.h5`` with ``/sha256`` (str m),
``/features`` (float32 (m, dim)), ``/quarantine_sha256``, ``/quarantine_reason`` and the attribute
``fingerprint``. A run commits one shard per batch by an atomic rename, so a kill loses at most
the batch in flight; the cache's entry file then points its rows at shard rows. Shards no row
points at are garbage, deleted at the end of a run; ``compact`` rewrites partly used ones.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.cache.keys import KeyIndex, StoredKeys
from featcache.cache.layout import (
    FEATURES,
    SHA256,
    Cache,
    ColumnReader,
    Locations,
    Views,
    attr_value,
    bytes_column,
    decode_strings,
    open_h5,
    read_cache,
    read_located,
    shard_index,
    shard_row_counts,
    shards_dir,
    temporary_name,
    views_folder,
    write_error,
    write_file,
    write_strings,
)
from featcache.hashing import bytes_sha256

log = logging.getLogger(__name__)

SHARD_SHA256, SHARD_FEATURES = "sha256", "features"
SHARD_Q_SHA256, SHARD_Q_REASON = "quarantine_sha256", "quarantine_reason"
LEGACY_PARTS_SUFFIX = ".parts"  # where format 1 kept unfinished work
#: the most rows one shard gets when vectors are copied (upgrade, compact): 64 MB at 2048-d
COPY_ROWS = 8192
#: content hashes read at once to index an existing cache's (1 MB of them)
KEY_BLOCK_ROWS = 1 << 14
#: rows whose locations :func:`joined_locations` makes at once
JOIN_ROWS = 1 << 16


def view_key(sha256: str | bytes, view: int) -> str:
    """The key of view ``view`` of the image of content ``sha256`` in the shards of views."""
    return f"{_text(sha256)}/{view}"


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def sweep_temporaries(cache_path: Path) -> list[Path]:
    """Delete what killed runs left half-written beside ``cache_path``; returns what was deleted.

    Call it only while holding the cache's lock: the lock holder is the only writer, so any
    temporary it did not create itself belongs to a run that died.
    """
    cache_path = Path(cache_path)
    prefix = temporary_name(cache_path)
    found = [p for p in cache_path.parent.iterdir() if p.name.startswith(prefix)]
    for folder in (shards_dir(cache_path), views_folder(cache_path), Path(str(cache_path) + LEGACY_PARTS_SUFFIX)):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for leftover in found:
        leftover.unlink(missing_ok=True)
    if found:
        log.info("removed %d temporary file(s) left by an interrupted run", len(found))
    return found


def adopt_legacy_parts(cache_path: Path) -> int:
    """Move the parts an interrupted format-1 run left in ``<cache>.parts/`` into the shards folder."""
    legacy = Path(str(cache_path) + LEGACY_PARTS_SUFFIX)
    if not legacy.is_dir():
        return 0
    target = shards_dir(cache_path)
    target.mkdir(parents=True, exist_ok=True)
    moved = 0
    for part in sorted(legacy.glob("part-*.h5")):
        os.replace(part, target / f"{bytes_sha256(part.read_bytes())[:32]}.h5")
        moved += 1
    for entry in legacy.iterdir():
        entry.unlink(missing_ok=True)
    legacy.rmdir()
    return moved


class ShardWriter:
    """Commits computed vectors and quarantined hashes as shards, each by an atomic rename."""

    def __init__(self, directory: Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self._token = os.urandom(4).hex()  # writers on other nodes of a shared folder may have the same pid
        self.rows_written = 0

    def write(self, sha256s, vectors: np.ndarray, bad: list[tuple[str, str]] = ()) -> Path:
        """Commit one shard: ``vectors`` float32 (len(sha256s), dim) and ``bad`` (sha256, reason) pairs."""
        self._seq += 1
        sha256s = decode_strings(sha256s)
        data = self._hdf5_bytes(sha256s, vectors, bad)
        final = self.directory / f"{bytes_sha256(data)[:32]}.h5"
        tmp = self.directory / f".shard-{os.getpid()}-{self._seq:06d}-{self._token}.h5.tmp"
        try:
            # HDF5 is built in memory and written with plain file I/O, so a full disk is an
            # ordinary OSError and never leaves the HDF5 library with a half-flushed file.
            write_file(tmp, data)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise write_error(final, exc) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.rows_written += len(sha256s)
        return final

    def _hdf5_bytes(self, sha256s, vectors, bad) -> bytes:
        import io

        import h5py

        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as h5:
            h5.attrs["fingerprint"] = self.fingerprint
            write_strings(h5, SHARD_SHA256, list(sha256s))
            h5.create_dataset(SHARD_FEATURES, data=np.asarray(vectors, dtype=np.float32))
            write_strings(h5, SHARD_Q_SHA256, [s for s, _ in bad])
            write_strings(h5, SHARD_Q_REASON, [r for _, r in bad])
        return buffer.getvalue()


class VectorPool:
    """Where the vector of each content hash can be read: shards, or the file of a format-1 cache.

    The rows of an existing cache are found through :class:`CacheRows` (their hashes stay in its entry
    file); every other content hash (shards of unfinished runs, vectors computed or copied in this run)
    has an entry: a source file and a row in it, kept as numpy columns and found through a
    :class:`KeyIndex`. Indexing and locating millions of rows costs a few array operations, not a
    Python object per row.
    """

    def __init__(self, max_open: int = 32):
        self._id = KeyIndex()  # sha256 (or view key) -> entry
        self._source: list[np.ndarray] = []  # per entry: index into _sources (chunks, joined on demand)
        self._row: list[np.ndarray] = []  # per entry: row in that source
        self._wins: list[np.ndarray] = []  # per entry: it was added to replace where the hash lay before
        self._cache: CacheRows | None = None
        self._sources: list[Path] = []
        self._source_rows: list[int] = []
        self.quarantine: dict[str, str] = {}
        self.dim: int | None = None
        self.known: set[Path] = set()  # shards already indexed
        self._handles: OrderedDict[Path, object] = OrderedDict()
        self._max_open = max_open

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._id or (self._cache is not None and sha256 in self._cache.keys)

    def __len__(self) -> int:
        """Entries: content hashes, an existing cache's counted once per row it reuses."""
        return len(self._id) + (len(self._cache.keys) if self._cache is not None else 0)

    def hashes(self) -> list[str]:
        """Every content hash the pool holds a vector of."""
        return self._id.keys() + (self._cache.keys.keys() if self._cache is not None else [])

    def add_cache(self, cache_path: Path, cache: Cache | None = None) -> np.ndarray:
        """Index the rows and quarantine of an existing cache (``cache``, its metadata when already read, saves
        reading it again); rows of missing or damaged shards are left out. Which rows were indexed, bool (n,).
        The rows' content hashes are read a block at a time and left in the file."""
        if cache is None:
            cache = read_cache(cache_path, with_vectors=False, with_rows=False)
        for entry in cache.quarantine:
            if entry.sha256:
                self.quarantine.setdefault(entry.sha256, entry.reason)
        if not cache.n_rows:
            return np.zeros(0, dtype=bool)
        loc = cache.locations
        if loc is None:  # format 1: the vectors are in the cache file itself
            with open_h5(cache_path, chunk_cache=True) as h5:
                self.dim = int(h5[FEATURES].shape[1])
            source = np.array([self._source_id(Path(cache_path), cache.n_rows)])
            intact = np.ones(cache.n_rows, dtype=bool)
        else:
            self.dim = loc.dim
            source = self._intact_sources(shards_dir(cache_path), loc)
            intact = (source >= 0)[loc.index]
        self._cache = CacheRows(Path(cache_path), None if intact.all() else intact, source, loc)
        return intact

    def add_cache_shards(self, cache_path: Path, cache: Cache) -> np.ndarray:
        """As :meth:`add_cache` for a cache read without its rows' locations (``read_cache(located=False)``):
        which of its shards are intact, bool (s,); where its rows lie is read when asked."""
        for entry in cache.quarantine:
            if entry.sha256:
                self.quarantine.setdefault(entry.sha256, entry.reason)
        loc = cache.locations
        self.dim = loc.dim
        source = self._intact_sources(shards_dir(cache_path), loc)
        if not cache.n_rows:
            return source >= 0
        keep = None
        if (source < 0).any():  # the rows of the shards lost, left out of the index
            keep = (source >= 0)[shard_index(cache_path)]
        self._cache = CacheRows(Path(cache_path), keep, source, loc)
        return source >= 0

    def index_cache_keys(self) -> None:
        """Index the existing cache's content hashes now (else on the first lookup): an update that adds files
        has it done while their sizes are still being read; one that adds none never needs it."""
        if self._cache is not None:
            self._cache.keys  # noqa: B018 (made on first use)

    def add_views(self, cache_path: Path, views: Views, sha256s) -> None:
        """Index the augmented views of an existing cache by :func:`view_key`; ``sha256s`` are the content
        hashes of its rows. Views in missing or damaged shards are left out."""
        if not len(views):
            return
        keys = [view_key(sha256s[r], v) for r, v in zip(views.row.tolist(), views.view.tolist())]
        self.dim = views.locations.dim
        self._add_located(views_folder(cache_path), keys, views.locations)

    def _intact_sources(self, folder: Path, loc: Locations) -> np.ndarray:
        """The source id of each shard of ``loc``, -1 for a missing or damaged one."""
        ids = np.full(len(loc.files), -1, dtype=np.int64)
        for i, (name, rows, size) in enumerate(zip(loc.files, loc.file_rows, loc.file_bytes)):
            if _intact(folder / name, size):
                self.known.add(folder / name)
                ids[i] = self._source_id(folder / name, rows)
            else:
                log.warning("shard %s is missing or damaged; its rows will be computed again", name)
        return ids

    def _add_located(self, folder: Path, shas, loc: Locations) -> np.ndarray:
        source = self._intact_sources(folder, loc)[np.asarray(loc.index, dtype=np.int64)]
        intact = source >= 0
        keep = np.flatnonzero(intact)
        kept = shas if len(keep) == len(shas) else bytes_column(shas)[keep]
        self._add(kept, source[keep], np.asarray(loc.row, dtype=np.int64)[keep])
        return intact

    def _source_id(self, path: Path, rows: int) -> int:
        self._sources.append(path)
        self._source_rows.append(rows)
        return len(self._sources) - 1

    def _add(self, shas, source: np.ndarray, row: np.ndarray, replace: bool = False) -> None:
        """New entries for ``shas``; a hash keeps its first entry (an existing cache's row first of all)
        unless ``replace``."""
        first = self._entries()
        self._source.append(source)
        self._row.append(row)
        self._wins.append(np.full(len(row), replace))
        self._id.add(shas, np.arange(first, first + len(shas), dtype=np.int64), replace)

    def _entries(self) -> int:
        return sum(len(chunk) for chunk in self._row)

    def _columns(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Source, row and whether it replaces, of every entry, joined into one chunk each."""
        if len(self._row) != 1:
            self._source = [np.concatenate(self._source or [np.zeros(0, np.int64)])]
            self._row = [np.concatenate(self._row or [np.zeros(0, np.int64)])]
            self._wins = [np.concatenate(self._wins or [np.zeros(0, bool)])]
        return self._source[0], self._row[0], self._wins[0]

    def _where(self, sha256s) -> tuple[np.ndarray, np.ndarray]:
        """Source index and row of each of ``sha256s`` (all known)."""
        keys = bytes_column(sha256s)
        ids = self._id.find(keys)
        source, row, wins = self._columns()
        found, hit = ids >= 0, ids[ids >= 0]
        where_source, where_row = np.full(len(keys), -1, dtype=np.int64), np.full(len(keys), -1, dtype=np.int64)
        where_source[found], where_row[found] = source[hit], row[hit]
        if self._cache is not None and len(keys):  # (no key asked: the cache's hashes need no index)
            replaced = np.zeros(len(keys), dtype=bool)
            replaced[found] = wins[hit]
            if replaced.any():  # a replacing entry wins over the cache's row: the cache is not asked
                cached = np.full(len(keys), -1, dtype=np.int64)
                ask = np.flatnonzero(~replaced)
                cached[ask] = self._cache.keys.find(keys[ask])
            else:
                cached = self._cache.keys.find(keys)
            use = cached >= 0
            where_source[use], where_row[use] = self._cache.where(cached[use])
        if len(keys) and where_source.min() < 0:
            raise KeyError(f"{int(np.count_nonzero(where_source < 0))} content hash(es) not in the pool")
        return where_source, where_row

    def add_shards(self, directory: Path, fingerprint: str) -> int:
        """Index the shards of ``fingerprint`` not indexed yet; unreadable leftovers are deleted."""
        used = 0
        for shard in list_shards(directory):
            if shard in self.known:
                continue
            try:
                self._add_shard(shard, fingerprint)
                used += 1
            except (OSError, KeyError, ValueError) as exc:
                log.warning("dropping unreadable shard %s (%s); its images will be computed again", shard, exc)
                shard.unlink(missing_ok=True)
        return used

    def _add_shard(self, shard: Path, fingerprint: str) -> None:
        import h5py

        with h5py.File(shard, "r") as h5:
            if attr_value(h5.attrs["fingerprint"]) != fingerprint:
                raise ValueError("shard made with other settings")
            shas = decode_strings(h5[SHARD_SHA256][:])
            for sha, reason in zip(decode_strings(h5[SHARD_Q_SHA256][:]), decode_strings(h5[SHARD_Q_REASON][:])):
                self.quarantine.setdefault(sha, reason)
            if shas:
                self.dim = int(h5[SHARD_FEATURES].shape[1])
        source = self._source_id(shard, len(shas))
        self._add(shas, np.full(len(shas), source, dtype=np.int64), np.arange(len(shas), dtype=np.int64))
        self.known.add(shard)

    def gather(self, sha256s) -> np.ndarray:
        """Vectors of ``sha256s`` in that order, float32 (len(sha256s), dim)."""
        out = np.empty((len(sha256s), self.dim or 0), dtype=np.float32)
        source, row = self._where(sha256s)
        for s in np.unique(source).tolist():
            at = np.flatnonzero(source == s)
            unique, inverse = np.unique(row[at], return_inverse=True)
            out[at] = _read_rows(self._dataset(self._sources[s]), unique)[inverse]
        return out

    def locate(self, sha256s, writer: ShardWriter, known: tuple[Locations, np.ndarray] | None = None) -> Locations:
        """Where each of ``sha256s`` lies in a shard; vectors still in a format-1 file are copied into new shards.
        With ``known`` = (locations, reused), row i with ``reused[i]`` >= 0 lies where row ``reused[i]`` of
        those locations does (its shard intact), and ``sha256s`` are the content hashes of the other rows, in
        order: only those are looked up."""
        if known is None:
            return self._locate(sha256s, writer)
        where, reused = known
        miss = np.flatnonzero(reused < 0)
        if len(miss) != len(sha256s):
            raise ValueError(f"{len(miss)} rows are not reused but {len(sha256s)} content hashes were given")
        found = self._locate(bytes_column(sha256s), writer)
        return joined_locations(where, reused, found, miss)

    def _locate(self, sha256s, writer: ShardWriter) -> Locations:
        if any(path.parent != writer.directory for path in self._sources):
            source, _ = self._where(sha256s)
            outside = np.array([path.parent != writer.directory for path in self._sources])[source]
            self.copy_into(sorted({sha256s[i] for i in np.flatnonzero(outside).tolist()}), writer)
        return self.locations(sha256s)

    def copy_into(self, sha256s: list[str], writer: ShardWriter) -> None:
        """Write the vectors of ``sha256s`` into new shards of up to COPY_ROWS rows, and read them from there."""
        for start in range(0, len(sha256s), COPY_ROWS):
            chunk = list(sha256s[start : start + COPY_ROWS])
            shard = writer.write(chunk, self.gather(chunk))
            source = self._source_id(shard, len(chunk))
            rows = np.arange(len(chunk), dtype=np.int64)
            self._add(chunk, np.full(len(chunk), source, dtype=np.int64), rows, replace=True)

    def locations(self, sha256s) -> Locations:
        """The shard and row of each of ``sha256s``, all of which must lie in shards."""
        source, row = self._where(sha256s)
        used, index = np.unique(source, return_inverse=True)
        paths = [self._sources[s] for s in used.tolist()]
        rows = [self._source_rows[s] for s in used.tolist()]
        sizes = [path.stat().st_size for path in paths]
        return Locations([p.name for p in paths], rows, sizes, index.astype(np.int32).reshape(-1), row, self.dim or 0)

    def _dataset(self, source: Path):
        import h5py

        if source not in self._handles:
            if len(self._handles) >= self._max_open:
                self._handles.popitem(last=False)[1].close()
            self._handles[source] = h5py.File(source, "r")
        self._handles.move_to_end(source)
        return self._handles[source][FEATURES]

    def close(self) -> None:
        """Close the files read and let go of the existing cache's rows (the pool then knows only its other
        entries); closing again does nothing."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        if self._cache is not None:
            self._cache.close()
            self._cache = None


class CacheRows:
    """The rows of an existing cache as a pool finds them: their content hashes (left in the entry file
    ``path``; indexed on first use, rows where ``keep`` is False left out), the source id of each of its
    shards (-1: not intact) or, for format 1, of the cache file itself, and where each row lies (None for
    format 1: row i of the file)."""

    def __init__(self, path: Path, keep: np.ndarray | None, source: np.ndarray, locations: Locations | None):
        self.path, self.keep, self.source, self.locations = path, keep, source, locations
        self._keys: StoredKeys | None = None

    @property
    def keys(self) -> StoredKeys:
        """The index of the rows' content hashes (12 bytes a row; a read of the hash column to make)."""
        if self._keys is None:
            self._keys = StoredKeys(ColumnReader(self.path, SHA256, KEY_BLOCK_ROWS), self.keep)
        return self._keys

    def where(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Source id and row in it of each of the cache's ``rows``."""
        if self.locations is None:
            return np.full(len(rows), self.source[0], dtype=np.int64), rows
        if self.locations.index is None:  # not held: read for these rows
            index, row = read_located(self.path, rows)
            return self.source[index], row
        return self.source[np.asarray(self.locations.index)[rows]], np.asarray(self.locations.row)[rows]

    def close(self) -> None:
        if self._keys is not None:
            self._keys.close()


def joined_locations(known: Locations, reused: np.ndarray, found: Locations, miss: np.ndarray) -> Locations:
    """The locations of ``len(reused)`` rows: row i at row ``reused[i]`` of ``known`` where that is >= 0, the
    rows ``miss`` (the others, in order) where ``found`` says; only the shards they use are listed. Made a
    block of rows at a time into the arrays returned, so a cache of millions of rows needs no other copy."""
    names = list(dict.fromkeys([*known.files, *found.files]))
    at = {name: i for i, name in enumerate(names)}
    rows_of = dict(zip(known.files, known.file_rows)) | dict(zip(found.files, found.file_rows))
    bytes_of = dict(zip(known.files, known.file_bytes)) | dict(zip(found.files, found.file_bytes))
    known_file = np.array([at[f] for f in known.files], dtype=np.int32)
    known_index, known_row = np.asarray(known.index), np.asarray(known.row)
    index, row = np.empty(len(reused), dtype=np.int32), np.empty(len(reused), dtype=np.int64)
    for start in range(0, len(reused), JOIN_ROWS):
        source = reused[start : start + JOIN_ROWS]
        hit = np.flatnonzero(source >= 0)
        index[start + hit], row[start + hit] = known_file[known_index[source[hit]]], known_row[source[hit]]
    found_file = np.array([at[f] for f in found.files], dtype=np.int32)
    index[miss], row[miss] = found_file[np.asarray(found.index, dtype=np.int64)], found.row
    counts = np.zeros(len(names), dtype=np.int64)
    for start in range(0, len(index), JOIN_ROWS):  # (bincount would copy the whole index as int64)
        counts += np.bincount(index[start : start + JOIN_ROWS], minlength=len(names))
    used = np.flatnonzero(counts)
    renumbered = np.zeros(len(names), dtype=np.int32)
    renumbered[used] = np.arange(len(used), dtype=np.int32)
    for start in range(0, len(index), JOIN_ROWS):
        index[start : start + JOIN_ROWS] = renumbered[index[start : start + JOIN_ROWS]]
    files = [names[i] for i in used.tolist()]
    dim = known.dim or found.dim
    return Locations(files, [rows_of[f] for f in files], [bytes_of[f] for f in files], index, row, dim)


def _read_rows(dataset, rows: np.ndarray) -> np.ndarray:
    """``dataset[rows]`` for increasing ``rows``, as one slice when they are consecutive."""
    if len(rows) and int(rows[-1]) - int(rows[0]) + 1 == len(rows):
        return dataset[int(rows[0]) : int(rows[-1]) + 1]
    return dataset[rows]


def _intact(shard: Path, size: int) -> bool:
    """A shard is there and has the size it had when committed (a cheap check; ``check_shards`` reads it)."""
    try:
        return shard.stat().st_size == size
    except OSError:
        return False


def list_shards(directory: Path) -> list[Path]:
    """Committed shards of a shards folder, by name (temporary files are not shards)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if not p.name.startswith(".") and p.suffix == ".h5")


def _fingerprint_of(shard: Path) -> str | None:
    import h5py

    try:
        with h5py.File(shard, "r") as h5:
            return attr_value(h5.attrs["fingerprint"])
    except (OSError, KeyError):
        return None


def shard_fingerprints(directory: Path, skip=()) -> set[str]:
    """The fingerprints of the shards in ``directory`` but not in ``skip`` (unreadable ones are left out)."""
    found = {_fingerprint_of(shard) for shard in list_shards(directory) if shard not in skip}
    return found - {None}


def drop_other_shards(directory: Path, fingerprint: str) -> None:
    """Delete the shards of ``directory`` made with another fingerprint (or unreadable)."""
    for shard in list_shards(directory):
        if _fingerprint_of(shard) != fingerprint:
            shard.unlink(missing_ok=True)


def remove_unreferenced(directory: Path, referenced: list[str]) -> int:
    """Delete the shards no row of the cache points at; returns how many."""
    keep = set(referenced)
    garbage = [shard for shard in list_shards(directory) if shard.name not in keep]
    for shard in garbage:
        shard.unlink(missing_ok=True)
    return len(garbage)


@dataclass(frozen=True)
class ShardProblem:
    """A shard the entry file points at that cannot be read as committed, and how many rows it holds up."""

    file: str
    reason: str
    rows: int


def check_shards(cache: Cache) -> list[ShardProblem]:
    """Open every shard of ``cache`` and compare it with what the entry file recorded (none for format 1).
    Read without the shard of each row (``located=False``), the rows of a faulty shard are counted from
    the entry file a block at a time."""
    loc = cache.locations
    count = None
    if loc is not None and loc.index is None:
        count = lambda: shard_row_counts(cache.path, len(loc.files))  # noqa: E731
    return check_located(cache.shards_folder, loc, count)


def check_views(cache_path: Path, views: Views | None) -> list[ShardProblem]:
    """As :func:`check_shards`, for the shards of a cache's augmented views."""
    return check_located(views_folder(cache_path), views.locations) if views is not None else []


def check_located(folder: Path, loc: Locations | None, count=None) -> list[ShardProblem]:
    """Open every shard ``loc`` points at in ``folder`` and compare it with what was recorded; the rows of
    each faulty one are counted from ``loc.index``, or by ``count()`` (rows per shard) when it is None."""
    if loc is None:
        return []
    faults = [(i, name, _shard_fault(folder / name, rows, size, loc.dim))
              for i, (name, rows, size) in enumerate(zip(loc.files, loc.file_rows, loc.file_bytes))]  # fmt: skip
    faults = [fault for fault in faults if fault[2]]
    if not faults:
        return []
    if loc.index is not None:
        affected = np.bincount(np.asarray(loc.index, dtype=np.int64), minlength=len(loc.files))
    else:
        affected = count()
    return [ShardProblem(name, reason, int(affected[i])) for i, name, reason in faults]


def _shard_fault(shard: Path, rows: int, size: int, dim: int) -> str | None:
    import h5py

    try:
        if shard.stat().st_size != size:
            return f"{shard.stat().st_size} bytes, {size} committed"
        with h5py.File(shard, "r") as h5:
            shape = h5[SHARD_FEATURES].shape
    except FileNotFoundError:
        return "missing"
    except (OSError, KeyError) as exc:
        return f"unreadable ({str(exc).split('(')[0].strip() or type(exc).__name__})"
    return None if shape == (rows, dim) else f"holds {shape}, the entry file expects {(rows, dim)}"
