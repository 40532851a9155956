"""Stage one's pipeline: read, hash and decode new files in threads, embed them in batches, commit shards.

Worker threads read each new file once: they hash its bytes, skip contents the pool holds or
another file took, and decode the rest. The main thread embeds full batches while the workers go
ahead (a bounded window) and a writer thread commits the vectors as a shard every few seconds
(``commit_seconds``), so reading, hashing, decoding and HDF5 writes overlap the forward passes; memory
stays bounded. The model is built only when a first image needs it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from featcache.cache.layout import QuarantineEntry
from featcache.cache.shards import ShardWriter, VectorPool, shards_dir
from featcache.config import ExtractConfig
from featcache.extraction.dataset import Sample
from featcache.extraction.priority import DecodePriority
from featcache.extraction.store import LocalFolder, ObjectStore, open_source
from featcache.images import ImageDecodeError, PreprocessSpec, decode_image
from featcache.progress import progress_bar

#: what a worker returns for a file whose content is already in the pool or taken by another file
KNOWN = "known"

#: the most rows one shard of computed vectors gets (32 MB at 2048-d, held until it is committed)
COMMIT_ROWS = 4096


class ListedFile(NamedTuple):
    """An image file of the listing and its size (what decides how it is read)."""

    sample: Sample
    size: int


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


class Pending:
    """Vectors (and bad contents) computed and not committed yet: due as one shard once they are
    COMMIT_ROWS rows or ``seconds`` have passed since the last commit (0: every batch)."""

    def __init__(self, seconds: float, clock=time.monotonic):
        self.seconds, self._clock = seconds, clock
        self._since = clock()
        self.shas: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.bad: list[tuple[str, str]] = []

    def add(self, shas: list[str], vectors: np.ndarray, bad: list[tuple[str, str]]) -> None:
        self.shas += shas
        if len(vectors):
            self.vectors.append(vectors)
        self.bad += bad

    def __bool__(self) -> bool:
        return bool(self.shas or self.bad)

    def due(self) -> bool:
        return bool(self) and (len(self.shas) >= COMMIT_ROWS or self._clock() - self._since >= self.seconds)

    def take(self) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
        """What is pending, as one shard's sha256s, vectors and bad pairs; nothing is pending after."""
        vectors = np.concatenate(self.vectors) if self.vectors else np.zeros((0, 0), dtype=np.float32)
        taken = self.shas, vectors, self.bad
        self.shas, self.vectors, self.bad, self._since = [], [], [], self._clock()
        return taken


class Commits:
    """Vectors committed as shards by one writer thread, one shard in flight at a time: :meth:`add` a batch,
    committed with those before it once they are :meth:`Pending.due`; :meth:`flush` commits what is left."""

    def __init__(self, writer: ShardWriter, committer: ThreadPoolExecutor, seconds: float):
        self.writer, self._committer, self._pending, self._written = writer, committer, Pending(seconds), None

    def add(self, shas: list[str], vectors: np.ndarray, bad: list[tuple[str, str]]) -> None:
        self._pending.add(shas, vectors, bad)
        if self._pending.due():
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self.wait()  # a failed write stops the run
            self._written = self._committer.submit(self.writer.write, *self._pending.take())

    def wait(self) -> None:
        if self._written is not None:
            self._written.result()


def compute(new: list[ListedFile], pool: VectorPool, backbone, config: ExtractConfig, fingerprint: str, progress: bool):
    """Read, hash, decode and embed ``new`` (files the cache does not know), in listing order; a :class:`Computed`.
    Vectors are committed as a shard every ``config.commit_seconds`` (and of at most COMMIT_ROWS rows); what is
    pending when the run is interrupted (Ctrl-C) is committed before it stops."""
    done, embed, priority = Computed(), None, DecodePriority()
    if not new:
        return done
    with (
        progress_bar(len(new), progress, "extract", smoothing=0.1) as bar,
        ThreadPoolExecutor(config.workers, initializer=priority.lower) as workers,
        ThreadPoolExecutor(1) as committer,
    ):
        commits = Commits(ShardWriter(shards_dir(config.output), fingerprint), committer, config.commit_seconds)
        source, spec, claims = open_source(config.data_dir), config.preprocess, Claims(pool)
        read = lambda item: workers.submit(prepare_one, source, item.sample.relpath, item.size, spec, claims)  # noqa: E731
        prepared = ((item, *outcome) for item, outcome in in_order(read, new, priority, 4 * config.batch_size))
        try:
            for batch in group(prepared, config.batch_size):
                done.hashes.update(batch.hashes)
                done.unreadable += batch.unreadable
                if batch.to_commit:
                    if embed is None and batch.pixels:
                        embed = backbone.build()
                    commits.add(batch.shas, embed_pixels(embed, batch.pixels), batch.bad)
                bar.update(batch.files)
            commits.flush()
        except KeyboardInterrupt:
            commits.flush()
            raise
        finally:
            commits.wait()
    done.vectors = commits.writer.rows_written
    return done


def in_order(submit, items, priority: DecodePriority, window: int):
    """(item, its result) for each of ``items`` in order, ``submit(item)`` giving its future, with ``window``
    of them in flight; the threads that work on them yield the CPU to the forward pass (:class:`DecodePriority`)."""
    pending: deque = deque()
    for item in items:
        pending.append((item, submit(item)))
        if len(pending) >= window:
            first, future = pending.popleft()
            yield first, priority.wait(future)
    while pending:
        first, future = pending.popleft()
        yield first, priority.wait(future)


def prepare_one(source: LocalFolder | ObjectStore, relpath: str, size: int, spec: PreprocessSpec, claims: Claims):
    """(sha256, pixels | reason | KNOWN) of the file ``relpath`` of ``source``, or (None, reason) when it cannot
    be read."""
    try:
        sha, data = source.read(relpath, size)
    except OSError as exc:
        return None, source.reason(exc)
    if not claims.take(sha):
        return sha, KNOWN
    try:
        return sha, decode_image(data, spec)
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
