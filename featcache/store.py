"""The one module that knows the HDF5 layout of a feature cache, its committed parts and its lock.

Layout of a cache file (format ``featcache-features``, version 1), readable with plain h5py::

    /                       attributes: format, format_version, fingerprint and provenance
    /features               float32 (n, dim)   pooled backbone output per row
    /label                  int32   (n,)       index into /class_names
    /split                  str     (n,)       train | validation | test
    /path                   str     (n,)       path relative to the data folder, "/"-separated
    /sha256                 str     (n,)       hex sha256 of the file's bytes (the row's key)
    /size                   int64   (n,)       file size in bytes when read
    /mtime_ns               int64   (n,)       file modification time when read
    /class_names            str     (k,)       sorted class names
    /quarantine/path        str     (q,)       files that could not be used ...
    /quarantine/reason      str     (q,)       ... why ...
    /quarantine/sha256      str     (q,)       ... and their content hash ("" when unreadable)

A cache file is only ever replaced whole (written beside it, then renamed), so it is never
half-written. Work in progress lives in ``<cache>.parts/``: each part is a small HDF5 file
(``/sha256``, ``/features``, ``/quarantine_sha256``, ``/quarantine_reason``) committed by an
atomic rename, and parts are folded into the cache file at the end of a run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.errors import CacheError, LockedError

log = logging.getLogger(__name__)

FORMAT = "featcache-features"
FORMAT_VERSION = 1
FEATURES, LABEL, SPLIT, PATH, SHA256 = "features", "label", "split", "path", "sha256"
SIZE, MTIME, CLASS_NAMES, QUARANTINE = "size", "mtime_ns", "class_names", "quarantine"
PART_SHA256, PART_FEATURES = "sha256", "features"
PART_Q_SHA256, PART_Q_REASON = "quarantine_sha256", "quarantine_reason"
PARTS_SUFFIX, LOCK_SUFFIX = ".parts", ".lock"
CHUNK_ROWS = 1024


@dataclass
class Rows:
    """Per-row metadata of a cache, as parallel sequences of length n."""

    path: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    label: list[int] = field(default_factory=list)
    split: list[str] = field(default_factory=list)
    size: list[int] = field(default_factory=list)
    mtime_ns: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.path)


@dataclass(frozen=True)
class QuarantineEntry:
    path: str
    reason: str
    sha256: str = ""


@dataclass
class Cache:
    """A cache read back: ``features`` is float32 (n, dim), or None when not asked for."""

    path: Path
    attrs: dict
    class_names: list[str]
    rows: Rows
    quarantine: list[QuarantineEntry]
    features: np.ndarray | None = None

    @property
    def fingerprint(self) -> str:
        return self.attrs["fingerprint"]

    def split_indices(self, split: str) -> np.ndarray:
        """Row indices of ``split``, int64 of shape (m,)."""
        return np.flatnonzero(np.asarray(self.rows.split, dtype=object) == split)


def parts_dir(cache_path: Path) -> Path:
    return Path(str(cache_path) + PARTS_SUFFIX)


def _str_dtype():
    import h5py

    return h5py.string_dtype("utf-8")


def _open_h5(path: Path, mode: str = "r"):
    import h5py

    path = Path(path)
    if not path.exists():
        raise CacheError(f"no feature cache at {path}; run `featcache extract DATA_DIR -o {path}` first")
    try:
        return h5py.File(path, mode)
    except OSError as exc:
        raise CacheError(
            f"{path} is not a readable HDF5 file ({_short(exc)}); it may be truncated or corrupt — "
            f"rerun featcache extract with --overwrite"
        ) from None


def _short(exc: Exception) -> str:
    return str(exc).split("(")[0].strip().rstrip(",") or type(exc).__name__


def _decode(values) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def read_cache(path: Path, features: bool = True) -> Cache:
    """Read a whole cache; with ``features=False`` only its metadata (fast for ``info``)."""
    path = Path(path)
    with _open_h5(path) as h5:
        attrs = {k: _attr(v) for k, v in h5.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise CacheError(
                f"{path} is an HDF5 file but not a featcache feature cache; pass a file made by featcache extract"
            )
        if int(attrs.get("format_version", -1)) > FORMAT_VERSION:
            raise CacheError(f"{path} has cache format {attrs['format_version']}; upgrade featcache to read it")
        try:
            return _read_body(path, h5, attrs, features)
        except (KeyError, OSError, ValueError) as exc:
            raise CacheError(f"{path} is damaged ({_short(exc)}); rerun featcache extract with --overwrite") from None


def _read_body(path, h5, attrs, features) -> Cache:
    rows = Rows(
        path=_decode(h5[PATH][:]),
        sha256=_decode(h5[SHA256][:]),
        label=h5[LABEL][:].astype(int).tolist(),
        split=_decode(h5[SPLIT][:]),
        size=h5[SIZE][:].astype(int).tolist(),
        mtime_ns=h5[MTIME][:].astype(int).tolist(),
    )
    q = h5[QUARANTINE]
    quarantine = [
        QuarantineEntry(p, r, s) for p, r, s in zip(_decode(q[PATH][:]), _decode(q["reason"][:]), _decode(q[SHA256][:]))
    ]
    vectors = h5[FEATURES][:] if features else None
    return Cache(path, attrs, _decode(h5[CLASS_NAMES][:]), rows, quarantine, vectors)


def _attr(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_fingerprint(path: Path) -> str | None:
    """The fingerprint of the cache at ``path``, or None when there is no cache there."""
    if not Path(path).exists():
        return None
    with _open_h5(path) as h5:
        if _attr(h5.attrs.get("format")) != FORMAT:
            raise CacheError(f"{path} exists and is not a featcache cache; choose another -o or delete it")
        return _attr(h5.attrs["fingerprint"])


def write_cache(path, attrs, class_names, rows: Rows, pool: VectorPool, quarantine) -> None:
    """Write a complete cache beside ``path`` and rename it over ``path`` in one step."""
    import h5py

    path = Path(path)
    _check_space(path, len(rows) * ((pool.dim or 0) * 4 + 256) + len(quarantine) * 512 + (64 << 10))
    tmp = path.with_name(_cache_tmp(path, os.getpid()))
    try:
        with h5py.File(tmp, "w") as h5:
            h5.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, **attrs})
            _write_rows(h5, rows, pool)
            _write_strings(h5, CLASS_NAMES, class_names)
            q = h5.create_group(QUARANTINE)
            _write_strings(q, PATH, [e.path for e in quarantine])
            _write_strings(q, "reason", [e.reason for e in quarantine])
            _write_strings(q, SHA256, [e.sha256 for e in quarantine])
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except (OSError, RuntimeError) as exc:  # h5py reports failed flushes as RuntimeError
        tmp.unlink(missing_ok=True)
        raise _write_error(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _cache_tmp(path: Path, pid: int | str = "") -> str:
    """The name of the file a cache is written to before its rename (without a pid: its prefix)."""
    return f".{path.name}.tmp-{pid}"


def sweep_temporaries(cache_path: Path) -> list[Path]:
    """Delete what killed runs left half-written beside ``cache_path``; returns what was deleted.

    Call it only while holding the cache's lock: the lock holder is the only writer, so any
    temporary it did not create itself belongs to a run that died.
    """
    cache_path = Path(cache_path)
    prefix = _cache_tmp(cache_path)
    found = [p for p in cache_path.parent.iterdir() if p.name.startswith(prefix)]
    parts = parts_dir(cache_path)
    if parts.is_dir():
        found += [p for p in parts.iterdir() if p.name.startswith(".part-") and p.name.endswith(".tmp")]
    for leftover in found:
        leftover.unlink(missing_ok=True)
    if found:
        log.info("removed %d temporary file(s) left by an interrupted run", len(found))
    return found


def _check_space(path: Path, needed: int) -> None:
    """Refuse before writing when the new cache cannot fit: HDF5 copes badly with a full disk."""
    free = shutil.disk_usage(path.parent).free
    if free < needed:
        raise _write_error(path, OSError(errno.ENOSPC, f"{free} bytes free, about {needed} needed"))


def _write_rows(h5, rows: Rows, pool: VectorPool) -> None:
    n = len(rows)
    _write_strings(h5, PATH, rows.path)
    _write_strings(h5, SHA256, rows.sha256)
    _write_strings(h5, SPLIT, rows.split)
    h5.create_dataset(LABEL, data=np.asarray(rows.label, dtype=np.int32).reshape(n))
    h5.create_dataset(SIZE, data=np.asarray(rows.size, dtype=np.int64).reshape(n))
    h5.create_dataset(MTIME, data=np.asarray(rows.mtime_ns, dtype=np.int64).reshape(n))
    dim = pool.dim or 0
    chunks = (max(1, min(n, 256)), dim) if n and dim else None
    out = h5.create_dataset(FEATURES, shape=(n, dim), dtype=np.float32, chunks=chunks)
    for start in range(0, n, CHUNK_ROWS):
        stop = min(n, start + CHUNK_ROWS)
        out[start:stop] = pool.gather(rows.sha256[start:stop])


def _write_strings(group, name, values) -> None:
    group.create_dataset(name, data=np.asarray(list(values), dtype=object), dtype=_str_dtype(), shape=(len(values),))


def _write_error(path: Path, exc: Exception) -> CacheError:
    """A failed write as a one-line error; what was committed before stays intact."""
    if getattr(exc, "errno", None) == errno.ENOSPC or "No space left" in str(exc) or "errno = 28" in str(exc):
        return CacheError(
            f"no space left on the device while writing {path}; free some space and rerun the same "
            f"command (work committed before is kept)"
        )
    return CacheError(f"could not write {path} ({_short(exc)}); check the folder and rerun the same command")


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file and flush it to the disk."""
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PartWriter:
    """Commits computed vectors and quarantined hashes as small parts, each by an atomic rename."""

    def __init__(self, directory: Path, fingerprint: str):
        self.directory = Path(directory)
        self.fingerprint = fingerprint
        self.directory.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self.rows_written = 0

    def write(self, sha256s, vectors: np.ndarray, bad: list[tuple[str, str]] = ()) -> Path:
        """Commit one part: ``vectors`` float32 (len(sha256s), dim) and ``bad`` (sha256, reason) pairs."""
        self._seq += 1
        name = f"part-{time.time_ns()}-{os.getpid()}-{self._seq:06d}.h5"
        tmp, final = self.directory / f".{name}.tmp", self.directory / name
        image = self._image(sha256s, vectors, bad)
        try:
            # HDF5 is built in memory and written with plain file I/O, so a full disk is an
            # ordinary OSError and never leaves the HDF5 library with a half-flushed file.
            _write_file(tmp, image)
            os.replace(tmp, final)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _write_error(final, exc) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.rows_written += len(sha256s)
        return final

    def _image(self, sha256s, vectors, bad) -> bytes:
        import io

        import h5py

        buffer = io.BytesIO()
        with h5py.File(buffer, "w") as h5:
            h5.attrs["fingerprint"] = self.fingerprint
            _write_strings(h5, PART_SHA256, list(sha256s))
            h5.create_dataset(PART_FEATURES, data=np.asarray(vectors, dtype=np.float32))
            _write_strings(h5, PART_Q_SHA256, [s for s, _ in bad])
            _write_strings(h5, PART_Q_REASON, [r for _, r in bad])
        return buffer.getvalue()

    def close(self) -> None:
        """Nothing is buffered: every write is already committed."""


class VectorPool:
    """Where the vector of each content hash can be read: a cache file and committed parts."""

    def __init__(self, max_open: int = 32):
        self._where: dict[str, tuple[Path, int]] = {}
        self.quarantine: dict[str, str] = {}
        self.dim: int | None = None
        self._handles: OrderedDict[Path, object] = OrderedDict()
        self._max_open = max_open

    def __contains__(self, sha256: str) -> bool:
        return sha256 in self._where

    def __len__(self) -> int:
        return len(self._where)

    def add_cache(self, cache_path: Path) -> None:
        """Index the vectors and quarantine of an existing cache file."""
        with _open_h5(cache_path) as h5:
            for row, sha in enumerate(_decode(h5[SHA256][:])):
                self._where.setdefault(sha, (Path(cache_path), row))
            q = h5[QUARANTINE]
            for sha, reason in zip(_decode(q[SHA256][:]), _decode(q["reason"][:])):
                if sha:
                    self.quarantine.setdefault(sha, reason)
            if len(h5[SHA256]):
                self.dim = int(h5[FEATURES].shape[1])

    def add_parts(self, directory: Path, fingerprint: str) -> int:
        """Index committed parts of ``fingerprint``; unreadable leftovers are deleted. Returns parts used."""
        used = 0
        for part in list_parts(directory):
            try:
                self._add_part(part, fingerprint)
                used += 1
            except (OSError, KeyError, ValueError) as exc:
                log.warning("dropping unreadable part %s (%s); its images will be computed again", part, exc)
                part.unlink(missing_ok=True)
        return used

    def _add_part(self, part: Path, fingerprint: str) -> None:
        import h5py

        with h5py.File(part, "r") as h5:
            if _attr(h5.attrs["fingerprint"]) != fingerprint:
                raise ValueError("part made with other settings")
            for row, sha in enumerate(_decode(h5[PART_SHA256][:])):
                self._where.setdefault(sha, (part, row))
            for sha, reason in zip(_decode(h5[PART_Q_SHA256][:]), _decode(h5[PART_Q_REASON][:])):
                self.quarantine.setdefault(sha, reason)
            if len(h5[PART_SHA256]):
                self.dim = int(h5[PART_FEATURES].shape[1])

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


def list_parts(directory: Path) -> list[Path]:
    """Committed parts of a parts folder, oldest first (temporary files are not parts)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.name.startswith("part-") and p.suffix == ".h5")


def part_fingerprints(directory: Path) -> set[str]:
    """The fingerprints of the committed parts in ``directory`` (unreadable parts are skipped)."""
    import h5py

    found = set()
    for part in list_parts(directory):
        try:
            with h5py.File(part, "r") as h5:
                found.add(_attr(h5.attrs["fingerprint"]))
        except (OSError, KeyError):
            continue
    return found


def remove_parts(directory: Path) -> None:
    """Delete a parts folder after its parts were folded into the cache file."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        entry.unlink(missing_ok=True)
    directory.rmdir()


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


def read_features(path: Path, indices) -> np.ndarray:
    """Vectors of the rows ``indices`` (any order, repeats allowed), float32 (len(indices), dim).

    Reads only those rows, so checking a few rows of a large cache stays cheap.
    """
    idx = np.asarray(indices, dtype=np.int64).reshape(-1)
    with _open_h5(path) as h5:
        data = h5[FEATURES]
        if not len(idx):
            return np.zeros((0, data.shape[1]), dtype=np.float32)
        if idx.min() < 0 or idx.max() >= data.shape[0]:
            raise CacheError(f"{path} has {data.shape[0]} rows; row {int(idx.max())} does not exist")
        unique, inverse = np.unique(idx, return_inverse=True)
        block = data[unique]  # h5py reads increasing indices only
    return np.asarray(block[inverse], dtype=np.float32)
