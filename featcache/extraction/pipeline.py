"""Stage one's pipeline: read, hash and decode new files in threads, embed them in batches, commit shards.

Worker threads read each new file once: they hash its bytes, skip contents the pool holds or
another file took, and decode the rest. The main thread embeds full batches while the workers go
ahead (a bounded window) and a writer thread commits each batch as a shard, so reading, hashing,
decoding and HDF5 writes overlap the forward passes; memory stays bounded. The model is built
only when a first image needs it.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featcache.cache.layout import QuarantineEntry
from featcache.cache.shards import ShardWriter, VectorPool, shards_dir
from featcache.config import ExtractConfig
from featcache.extraction.dataset import Sample
from featcache.extraction.priority import DecodePriority
from featcache.hashing import bytes_sha256, file_sha256
from featcache.images import ImageDecodeError, PreprocessSpec, decode_image
from featcache.progress import progress_bar

#: what a worker returns for a file whose content is already in the pool or taken by another file
KNOWN = "known"

#: files larger than this are hashed and decoded from disk in two passes instead of read into memory
READ_WHOLE_LIMIT = 64 << 20


class ListedFile(NamedTuple):
    """An image file of the listing: its stat, and its content hash when the cache already knows it."""

    sample: Sample
    size: int
    mtime_ns: int
    sha256: str | None = None  # None until a worker has read a file the cache does not know


@dataclass
class Computed:
    """What the pipeline did: vectors committed, the content hash of each file it read, unreadable files."""

    vectors: int = 0
    hashes: dict[str, str] = field(default_factory=dict)  # relpath -> sha256
    unreadable: list[QuarantineEntry] = field(default_factory=list)


class Claims:
    """Content hashes some worker has taken on in this run (thread-safe); the pool's count as taken."""

    def __init__(self, pool: VectorPool):
        self._pool, self._taken, self._lock = pool, set(), threading.Lock()

    def take(self, sha256: str) -> bool:
        """True for the first caller with a content neither computed nor known to be bad."""
        if sha256 in self._pool or sha256 in self._pool.quarantine:
            return False
        with self._lock:
            if sha256 in self._taken:
                return False
            self._taken.add(sha256)
            return True


@dataclass
class Batch:
    """Up to a batch of decoded images (and bad ones) to embed and commit, and what it learnt of its files."""

    shas: list[str] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # relpath -> sha256 of every file read
    unreadable: list[QuarantineEntry] = field(default_factory=list)
    files: int = 0

    @property
    def to_commit(self) -> bool:
        return bool(self.shas or self.bad)


def compute(new: list[ListedFile], pool: VectorPool, backbone, config: ExtractConfig, fingerprint: str, progress: bool):
    """Read, hash, decode and embed ``new`` (files the cache does not know), in listing order; a :class:`Computed`."""
    done = Computed()
    if not new:
        return done
    embed, written = None, None
    writer = ShardWriter(shards_dir(config.output), fingerprint)
    priority = DecodePriority()
    with (
        progress_bar(len(new), progress, "extract", smoothing=0.1) as bar,
        ThreadPoolExecutor(config.workers, initializer=priority.lower) as workers,
        ThreadPoolExecutor(1) as committer,
    ):
        prepared = _prepared(workers, new, config, Claims(pool), priority, window=4 * config.batch_size)
        for batch in group(prepared, config.batch_size):
            done.hashes.update(batch.hashes)
            done.unreadable += batch.unreadable
            if batch.to_commit:
                if embed is None and batch.pixels:
                    embed = backbone.build()
                vectors = embed_pixels(embed, batch.pixels)
                if written is not None:
                    written.result()  # at most one shard in flight; a failed write stops the run
                written = committer.submit(writer.write, batch.shas, vectors, batch.bad)
            bar.update(batch.files)
        if written is not None:
            written.result()
    done.vectors = writer.rows_written
    return done


def _prepared(workers, new: list[ListedFile], config: ExtractConfig, claims: Claims, priority, window: int):
    """Yield (file, sha256, outcome) in listing order, keeping ``window`` files in flight."""
    pending: deque = deque()
    root, spec = config.data_dir, config.preprocess
    for item in new:
        pending.append((item, workers.submit(prepare_one, root / item.sample.relpath, item.size, spec, claims)))
        if len(pending) >= window:
            first, future = pending.popleft()
            yield first, *priority.wait(future)
    while pending:
        first, future = pending.popleft()
        yield first, *priority.wait(future)


def prepare_one(path: Path, size: int, spec: PreprocessSpec, claims: Claims):
    """(sha256, pixels | reason | KNOWN) of one file, or (None, reason) when it cannot be read."""
    try:
        if size > READ_WHOLE_LIMIT:
            sha, source = file_sha256(path), path
        else:
            source = path.read_bytes()
            sha = bytes_sha256(source)
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror}"
    if not claims.take(sha):
        return sha, KNOWN
    try:
        return sha, decode_image(source, spec)
    except ImageDecodeError as exc:
        return sha, str(exc)


def group(prepared, size: int):
    """Batches of ``size`` images (or bad images) from (file, sha256, outcome) triples."""
    batch = Batch()
    for item, sha, outcome in prepared:
        batch.files += 1
        relpath = item.sample.relpath
        if sha is None:
            batch.unreadable.append(QuarantineEntry(relpath, outcome))
            continue
        batch.hashes[relpath] = sha
        if isinstance(outcome, np.ndarray):
            batch.shas.append(sha)
            batch.pixels.append(outcome)
        elif outcome is not KNOWN:
            batch.bad.append((sha, outcome))
        if len(batch.shas) == size or len(batch.bad) >= size:
            yield batch
            batch = Batch()
    if batch.files:
        yield batch


def embed_pixels(embed, pixels: list[np.ndarray]) -> np.ndarray:
    return embed(np.stack(pixels)) if pixels else np.zeros((0, 0), dtype=np.float32)
