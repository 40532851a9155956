"""Work in progress of a cache: parts committed one batch at a time, and where each vector can be read.

A part is a small HDF5 file in ``<cache>.parts/`` (``/sha256``, ``/features``,
``/quarantine_sha256``, ``/quarantine_reason``, attribute ``fingerprint``) committed by an atomic
rename; parts are folded into the cache file at the end of a run and then deleted.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

from featcache.cache.layout import (
    FEATURES,
    QUARANTINE,
    SHA256,
    attr_value,
    decode_strings,
    open_h5,
    temporary_name,
    write_error,
    write_file,
    write_strings,
)

log = logging.getLogger(__name__)

PART_SHA256, PART_FEATURES = "sha256", "features"
PART_Q_SHA256, PART_Q_REASON = "quarantine_sha256", "quarantine_reason"
PARTS_SUFFIX = ".parts"


def parts_dir(cache_path: Path) -> Path:
    return Path(str(cache_path) + PARTS_SUFFIX)


def sweep_temporaries(cache_path: Path) -> list[Path]:
    """Delete what killed runs left half-written beside ``cache_path``; returns what was deleted.

    Call it only while holding the cache's lock: the lock holder is the only writer, so any
    temporary it did not create itself belongs to a run that died.
    """
    cache_path = Path(cache_path)
    prefix = temporary_name(cache_path)
    found = [p for p in cache_path.parent.iterdir() if p.name.startswith(prefix)]
    parts = parts_dir(cache_path)
    if parts.is_dir():
        found += [p for p in parts.iterdir() if p.name.startswith(".part-") and p.name.endswith(".tmp")]
    for leftover in found:
        leftover.unlink(missing_ok=True)
    if found:
        log.info("removed %d temporary file(s) left by an interrupted run", len(found))
    return found


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
        image = self._hdf5_bytes(sha256s, vectors, bad)
        try:
            # HDF5 is built in memory and written with plain file I/O, so a full disk is an
            # ordinary OSError and never leaves the HDF5 library with a half-flushed file.
            write_file(tmp, image)
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
            write_strings(h5, PART_SHA256, list(sha256s))
            h5.create_dataset(PART_FEATURES, data=np.asarray(vectors, dtype=np.float32))
            write_strings(h5, PART_Q_SHA256, [s for s, _ in bad])
            write_strings(h5, PART_Q_REASON, [r for _, r in bad])
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
        with open_h5(cache_path) as h5:
            for row, sha in enumerate(decode_strings(h5[SHA256][:])):
                self._where.setdefault(sha, (Path(cache_path), row))
            q = h5[QUARANTINE]
            for sha, reason in zip(decode_strings(q[SHA256][:]), decode_strings(q["reason"][:])):
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
            if attr_value(h5.attrs["fingerprint"]) != fingerprint:
                raise ValueError("part made with other settings")
            for row, sha in enumerate(decode_strings(h5[PART_SHA256][:])):
                self._where.setdefault(sha, (part, row))
            for sha, reason in zip(decode_strings(h5[PART_Q_SHA256][:]), decode_strings(h5[PART_Q_REASON][:])):
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
                found.add(attr_value(h5.attrs["fingerprint"]))
        except (OSError, KeyError):
            continue
    return found


def drop_other_parts(directory: Path, fingerprint: str) -> None:
    """Delete the parts of ``directory`` made with another fingerprint (or unreadable)."""
    import h5py

    for part in list_parts(directory):
        try:
            with h5py.File(part, "r") as h5:
                keep = attr_value(h5.attrs["fingerprint"]) == fingerprint
        except (OSError, KeyError):
            keep = False
        if not keep:
            part.unlink(missing_ok=True)


def remove_parts(directory: Path) -> None:
    """Delete a parts folder after its parts were folded into the cache file."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        entry.unlink(missing_ok=True)
    directory.rmdir()
