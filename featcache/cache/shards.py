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

from featcache.cache.layout import (
    FEATURES,
    SHA256,
    Cache,
    Locations,
    Views,
    attr_value,
    bytes_column,
    decode_strings,
    open_h5,
    read_cache,
    read_columns,
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
#: the most rows one shard gets when vectors are copied (upgrade, compact): 64 MB at 2048-d
COPY_ROWS = 8192


def view_key(sha256: str | bytes, view: int) -> str:
    """The key of view ``view`` of the image of content ``sha256`` in the shards of views."""
    return f"{sha256.decode() if isinstance(sha256, bytes) else sha256}/{view}"


def sweep_temporaries(cache_path: Path) -> list[Path]:
    """Delete what killed runs left half-written beside ``cache_path``; returns what was deleted.

    Call it only while holding the cache's lock: the lock holder is the only writer, so any
    temporary it did not create itself belongs to a run that died.
    """
    cache_path = Path(cache_path)
    prefix = temporary_name(cache_path)
    found = [p for p in cache_path.parent.iterdir() if p.name.startswith(prefix)]
    for folder in (shards_dir(cache_path), views_folder(cache_path)):
        if folder.is_dir():
            found += [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for leftover in found:
        leftover.unlink(missing_ok=True)
    if found:
        log.info("removed %d temporary file(s) left by an interrupted run", len(found))
    return found


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
    """Where the vector of each content hash (or view key) can be read: a source file (a shard, or the file
    of a format-1 cache) and a row in it.

    Keys come in chunks of numpy columns (an existing cache's content hashes, the rows of a shard, vectors
    copied in this run), in three ranks: those added with ``replace`` (the latest first), the existing cache's,
    the others (the first first). The chunks of a rank are joined and sorted on its first lookup after a
    change, so the existing cache's hashes are sorted once and never copied; a lookup is a binary search
    (``searchsorted``) in each rank in turn, and a key's first entry in that order wins.
    """

    REPLACE, CACHE, OTHER = 0, 1, 2

    def __init__(self, max_open: int = 32):
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, int]] = []  # keys, source, row, rank
        self._tables: dict[int, tuple] = {}  # rank -> its chunks' keys, source, row joined, and their order
        self._cache_rows: tuple[np.ndarray, np.ndarray] | None = None  # per existing-cache row: source, row
        self._sources: list[Path] = []
        self._source_rows: list[int] = []
        self.quarantine: dict[str, str] = {}
        self.dim: int | None = None
        self.known: set[Path] = set()  # shards already indexed
        self._handles: OrderedDict[Path, object] = OrderedDict()
        self._max_open = max_open

    def __contains__(self, key) -> bool:
        return bool(self.find([key])[0][0] >= 0)

    def __len__(self) -> int:
        """Entries: keys, an existing cache's counted once per row it reuses."""
        return sum(len(keys) for keys, *_ in self._chunks)

    def keys(self) -> np.ndarray:
        """Every key the pool holds a vector of (fixed-width bytes, sorted, each once)."""
        return np.unique(np.concatenate([self._table(rank)[0] for rank in (self.REPLACE, self.CACHE, self.OTHER)]))

    def add_cache(self, cache_path: Path, cache: Cache | None = None, sha256s=None) -> np.ndarray:
        """Index the rows and quarantine of an existing cache (``cache``, its metadata, and ``sha256s``, its rows'
        content hashes, save reading them again); rows of missing or damaged shards are left out. Which rows
        were indexed, bool (n,)."""
        if cache is None:
            cache = read_cache(cache_path, with_vectors=False, with_rows=False)
        for entry in cache.quarantine:
            if entry.sha256:
                self.quarantine.setdefault(entry.sha256, entry.reason)
        if not cache.n_rows:
            return np.zeros(0, dtype=bool)
        if sha256s is None:
            sha256s = read_columns(cache_path, (SHA256,)).sha256
        loc = cache.locations
        if loc is None:  # format 1: the vectors are in the cache file itself
            with open_h5(cache_path, chunk_cache=True) as h5:
                self.dim = int(h5[FEATURES].shape[1])
            source = np.full(cache.n_rows, self._source_id(Path(cache_path), cache.n_rows), dtype=np.int64)
            row = np.arange(cache.n_rows, dtype=np.int64)
        else:
            self.dim = loc.dim
            source, row = self._intact_sources(shards_dir(cache_path), loc)[loc.index], np.asarray(loc.row)
        intact = source >= 0
        self._cache_rows = (source, row)
        kept = slice(None) if intact.all() else intact
        self._add(bytes_column(sha256s)[kept], source[kept], row[kept], self.CACHE)
        return intact

    def add_views(self, cache_path: Path, views: Views, sha256s) -> None:
        """Index the augmented views of an existing cache by :func:`view_key`; ``sha256s`` are the content
        hashes of its rows. Views in missing or damaged shards are left out."""
        if not len(views):
            return
        keys = bytes_column([view_key(sha256s[r], v) for r, v in zip(views.row.tolist(), views.view.tolist())])
        self.dim = views.locations.dim
        source = self._intact_sources(views_folder(cache_path), views.locations)[views.locations.index]
        kept = source >= 0
        self._add(keys[kept], source[kept], np.asarray(views.locations.row, dtype=np.int64)[kept])

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

    def _source_id(self, path: Path, rows: int) -> int:
        self._sources.append(path)
        self._source_rows.append(rows)
        return len(self._sources) - 1

    def _add(self, keys, source: np.ndarray, row: np.ndarray, rank: int = OTHER) -> None:
        """Entries for ``keys``, of ``rank`` (see the class)."""
        self._chunks.append((bytes_column(keys), source, row, rank))
        self._tables.pop(rank, None)

    def _table(self, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Keys, source and row of the entries of ``rank`` (in the order their first entry wins: the latest
        first for REPLACE) and the order that sorts the keys, stable (a key's winning entry first)."""
        if rank not in self._tables:
            chunks = [c for c in self._chunks if c[3] == rank]
            if rank == self.REPLACE:
                chunks.reverse()
            if len(chunks) == 1:  # (not copied)
                keys, source, row, _ = chunks[0]
            else:
                keys, source, row = (
                    np.concatenate([c[i] for c in chunks] or [np.zeros(0, dtype)])
                    for i, dtype in ((0, "S1"), (1, np.int64), (2, np.int64))
                )
            self._tables[rank] = (keys, source, row, np.argsort(keys, kind="stable"))
        return self._tables[rank]

    def find(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """The source id and row of each of ``keys`` (int64 (n,) each; -1 where unknown)."""
        keys = bytes_column(keys)
        found = np.full(len(keys), -1, dtype=np.int64), np.full(len(keys), -1, dtype=np.int64)
        for rank in (self.REPLACE, self.CACHE, self.OTHER):
            stored, source, row, order = self._table(rank)
            ask = np.flatnonzero(found[0] < 0)
            if not len(stored) or not len(ask):
                continue
            at = order[np.minimum(np.searchsorted(stored, keys[ask], sorter=order), len(order) - 1)]
            hit = stored[at] == keys[ask]
            found[0][ask[hit]], found[1][ask[hit]] = source[at[hit]], row[at[hit]]
        return found

    def _where(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """Source id and row of each of ``keys`` (all known)."""
        source, row = self.find(keys)
        if len(source) and source.min() < 0:
            raise KeyError(f"{int(np.count_nonzero(source < 0))} content hash(es) not in the pool")
        return source, row

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

    def gather(self, keys) -> np.ndarray:
        """Vectors of ``keys`` in that order, float32 (len(keys), dim)."""
        out = np.empty((len(keys), self.dim or 0), dtype=np.float32)
        source, row = self._where(keys)
        for s in np.unique(source).tolist():
            at = np.flatnonzero(source == s)
            unique, inverse = np.unique(row[at], return_inverse=True)
            out[at] = _read_rows(self._dataset(self._sources[s]), unique)[inverse]
        return out

    def locate(self, keys, writer: ShardWriter, reused: np.ndarray | None = None) -> Locations:
        """Where each of ``keys`` lies in a shard of ``writer``'s folder; vectors elsewhere (a format-1 file)
        are copied into new shards. With ``reused``, row i with ``reused[i]`` >= 0 lies where row ``reused[i]``
        of the existing cache does (its shard intact): only the other rows are looked up."""
        keys = bytes_column(keys)
        ask = np.arange(len(keys)) if reused is None else np.flatnonzero(reused < 0)
        outside = np.array([path.parent != writer.directory for path in self._sources], dtype=bool)
        if outside.any() and len(ask):
            elsewhere = outside[self._where(keys[ask])[0]]
            self.copy_into(np.unique(keys[ask][elsewhere]), writer)
        source, row = np.empty(len(keys), dtype=np.int64), np.empty(len(keys), dtype=np.int64)
        if reused is not None:  # (taken whole, -1 clipped and then set: no copy per row)
            np.take(self._cache_rows[0], reused, out=source, mode="clip")
            np.take(self._cache_rows[1], reused, out=row, mode="clip")
        source[ask], row[ask] = self._where(keys[ask])
        return self._locations(source, row)

    def copy_into(self, keys, writer: ShardWriter) -> None:
        """Write the vectors of ``keys`` into new shards of up to COPY_ROWS rows, and read them from there."""
        for start in range(0, len(keys), COPY_ROWS):
            chunk = bytes_column(keys[start : start + COPY_ROWS])
            shard = writer.write(chunk, self.gather(chunk))
            source = self._source_id(shard, len(chunk))
            rows = np.arange(len(chunk), dtype=np.int64)
            self._add(chunk, np.full(len(chunk), source, dtype=np.int64), rows, self.REPLACE)

    def locations(self, keys) -> Locations:
        """The shard and row of each of ``keys``, all of which must lie in shards."""
        return self._locations(*self._where(keys))

    def _locations(self, source: np.ndarray, row: np.ndarray) -> Locations:
        used = np.flatnonzero(np.bincount(source, minlength=len(self._sources)))
        renumbered = np.zeros(len(self._sources), dtype=np.int32)
        renumbered[used] = np.arange(len(used), dtype=np.int32)
        index = renumbered[source]
        paths = [self._sources[s] for s in used.tolist()]
        rows = [self._source_rows[s] for s in used.tolist()]
        sizes = [path.stat().st_size for path in paths]
        return Locations([p.name for p in paths], rows, sizes, index.reshape(-1), row, self.dim or 0)

    def _dataset(self, source: Path):
        import h5py

        if source not in self._handles:
            if len(self._handles) >= self._max_open:
                self._handles.popitem(last=False)[1].close()
            self._handles[source] = h5py.File(source, "r")
        self._handles.move_to_end(source)
        return self._handles[source][FEATURES]

    def close(self) -> None:
        """Close the files read and let go of every entry (the pool then knows none); closing again does
        nothing."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()
        self._chunks, self._tables, self._cache_rows = [], {}, None


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
    """Open every shard of ``cache`` and compare it with what the entry file recorded (none for format 1)."""
    return check_located(shards_dir(cache.path), cache.locations)


def check_views(cache_path: Path, views: Views | None) -> list[ShardProblem]:
    """As :func:`check_shards`, for the shards of a cache's augmented views."""
    return check_located(views_folder(cache_path), views.locations) if views is not None else []


def check_located(folder: Path, loc: Locations | None) -> list[ShardProblem]:
    """Open every shard ``loc`` points at in ``folder`` and compare it with what was recorded, with the
    number of rows each faulty one holds up."""
    if loc is None:
        return []
    faults = [(i, name, _shard_fault(folder / name, rows, size, loc.dim))
              for i, (name, rows, size) in enumerate(zip(loc.files, loc.file_rows, loc.file_bytes))]  # fmt: skip
    affected = np.bincount(np.asarray(loc.index, dtype=np.int64), minlength=len(loc.files))
    return [ShardProblem(name, reason, int(affected[i])) for i, name, reason in faults if reason]


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
