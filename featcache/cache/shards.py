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
    QUARANTINE,
    SHA256,
    Cache,
    Locations,
    attr_value,
    decode_strings,
    open_h5,
    read_locations,
    temporary_name,
    write_error,
    write_file,
    write_strings,
)
from featcache.hashing import bytes_sha256

log = logging.getLogger(__name__)

SHARD_SHA256, SHARD_FEATURES = "sha256", "features"
SHARD_Q_SHA256, SHARD_Q_REASON = "quarantine_sha256", "quarantine_reason"
SHARDS_SUFFIX = ".shards"
LEGACY_PARTS_SUFFIX = ".parts"  # where format 1 kept unfinished work
#: the most rows one shard gets when vectors are copied (upgrade, compact): 64 MB at 2048-d
COPY_ROWS = 8192


def shards_dir(cache_path: Path) -> Path:
    return Path(str(cache_path) + SHARDS_SUFFIX)


def sweep_temporaries(cache_path: Path) -> list[Path]:
    """Delete what killed runs left half-written beside ``cache_path``; returns what was deleted.

    Call it only while holding the cache's lock: the lock holder is the only writer, so any
    temporary it did not create itself belongs to a run that died.
    """
    cache_path = Path(cache_path)
    prefix = temporary_name(cache_path)
    found = [p for p in cache_path.parent.iterdir() if p.name.startswith(prefix)]
    for folder in (shards_dir(cache_path), Path(str(cache_path) + LEGACY_PARTS_SUFFIX)):
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
        self.rows_written = 0

    def write(self, sha256s, vectors: np.ndarray, bad: list[tuple[str, str]] = ()) -> Path:
        """Commit one shard: ``vectors`` float32 (len(sha256s), dim) and ``bad`` (sha256, reason) pairs."""
        self._seq += 1
        data = self._hdf5_bytes(sha256s, vectors, bad)
        final = self.directory / f"{bytes_sha256(data)[:32]}.h5"
        tmp = self.directory / f".shard-{os.getpid()}-{self._seq:06d}.h5.tmp"
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
    """Where the vector of each content hash can be read: shards, or the file of a format-1 cache."""

    def __init__(self, max_open: int = 32):
        self._where: dict[str, tuple[Path, int]] = {}
        self.quarantine: dict[str, str] = {}
        self.dim: int | None = None
        self.known: set[Path] = set()  # shards already indexed
        self._rows: dict[Path, int] = {}  # rows of each shard
        self._handles: OrderedDict[Path, object] = OrderedDict()
        self._max_open = max_open

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._where

    def __len__(self) -> int:
        return len(self._where)

    def add_cache(self, cache_path: Path) -> None:
        """Index the rows and quarantine of an existing cache; rows of missing or damaged shards are left out."""
        with open_h5(cache_path) as h5:
            shas = decode_strings(h5[SHA256][:])
            q = h5[QUARANTINE]
            for sha, reason in zip(decode_strings(q[SHA256][:]), decode_strings(q["reason"][:])):
                if sha:
                    self.quarantine.setdefault(sha, reason)
            if len(shas):
                self.dim = int(h5[FEATURES].shape[1])
            locations = read_locations(h5)
        if locations is None:  # format 1: the vectors are in the cache file itself
            self._where.update((sha, (Path(cache_path), row)) for row, sha in enumerate(shas))
            return
        self._add_located(shards_dir(cache_path), shas, locations)

    def _add_located(self, folder: Path, shas: list[str], loc: Locations) -> None:
        usable = [_intact(folder / name, size) for name, size in zip(loc.files, loc.file_bytes)]
        for i, name in enumerate(loc.files):
            if not usable[i]:
                log.warning("shard %s is missing or damaged; its rows will be computed again", name)
        for name, rows, ok in zip(loc.files, loc.file_rows, usable):
            if ok:
                self.known.add(folder / name)
                self._rows[folder / name] = rows
        paths = [folder / name if ok else None for name, ok in zip(loc.files, usable)]
        for sha, index, row in zip(shas, loc.index.tolist(), loc.row.tolist()):
            if paths[index] is not None:
                self._where.setdefault(sha, (paths[index], row))

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
            for row, sha in enumerate(decode_strings(h5[SHARD_SHA256][:])):
                self._where.setdefault(sha, (shard, row))
            for sha, reason in zip(decode_strings(h5[SHARD_Q_SHA256][:]), decode_strings(h5[SHARD_Q_REASON][:])):
                self.quarantine.setdefault(sha, reason)
            if len(h5[SHARD_SHA256]):
                self.dim = int(h5[SHARD_FEATURES].shape[1])
            self._rows[shard] = len(h5[SHARD_SHA256])
        self.known.add(shard)

    def gather(self, sha256s) -> np.ndarray:
        """Vectors of ``sha256s`` in that order, float32 (len(sha256s), dim)."""
        out = np.empty((len(sha256s), self.dim or 0), dtype=np.float32)
        by_file: dict[Path, list[tuple[int, int]]] = {}
        for i, sha in enumerate(sha256s):
            source, row = self._where[sha]
            by_file.setdefault(source, []).append((row, i))
        for source, pairs in by_file.items():
            pairs.sort()
            rows = np.array([r for r, _ in pairs])
            unique, inverse = np.unique(rows, return_inverse=True)
            block = self._dataset(source)[unique]
            out[[i for _, i in pairs]] = block[inverse]
        return out

    def locate(self, sha256s: list[str], writer: ShardWriter) -> Locations:
        """Where each of ``sha256s`` lies in a shard; vectors still in a format-1 file are copied into new shards."""
        self.copy_into(sorted({sha for sha in sha256s if self._where[sha][0].parent != writer.directory}), writer)
        return self.locations(sha256s)

    def copy_into(self, sha256s: list[str], writer: ShardWriter) -> None:
        """Write the vectors of ``sha256s`` into new shards of up to COPY_ROWS rows, and read them from there."""
        for start in range(0, len(sha256s), COPY_ROWS):
            chunk = sha256s[start : start + COPY_ROWS]
            shard = writer.write(chunk, self.gather(chunk))
            self._where.update((sha, (shard, row)) for row, sha in enumerate(chunk))
            self._rows[shard] = len(chunk)

    def locations(self, sha256s: list[str]) -> Locations:
        """The shard and row of each of ``sha256s``, all of which must lie in shards."""
        files: dict[Path, int] = {}
        index = np.empty(len(sha256s), dtype=np.int32)
        row = np.empty(len(sha256s), dtype=np.int64)
        for i, sha in enumerate(sha256s):
            shard, row[i] = self._where[sha]
            index[i] = files.setdefault(shard, len(files))
        rows = [self._rows[shard] for shard in files]
        sizes = [shard.stat().st_size for shard in files]
        return Locations([p.name for p in files], rows, sizes, index, row, self.dim or 0)

    def _dataset(self, source: Path):
        import h5py

        if source not in self._handles:
            if len(self._handles) >= self._max_open:
                self._handles.popitem(last=False)[1].close()
            self._handles[source] = h5py.File(source, "r")
        self._handles.move_to_end(source)
        return self._handles[source][FEATURES]

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


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
    loc = cache.locations
    if loc is None:
        return []
    affected = np.bincount(loc.index, minlength=len(loc.files)) if len(loc.index) else np.zeros(len(loc.files), int)
    problems = []
    for i, (name, rows, size) in enumerate(zip(loc.files, loc.file_rows, loc.file_bytes)):
        reason = _shard_fault(cache.shards_folder / name, rows, size, loc.dim)
        if reason:
            problems.append(ShardProblem(name, reason, int(affected[i])))
    return problems


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
