"""Stage one: run the frozen backbone once over every image and commit the vectors to the cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as WaitedTooLong  # not the builtin before Python 3.11
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from featcache import store
from featcache.config import ExtractConfig
from featcache.dataset import Dataset, Sample, file_sha256, scan, split_for_hash
from featcache.errors import BadImagesError, CacheError, ConfigError, FingerprintMismatch
from featcache.images import ImageDecodeError, PreprocessSpec, decode_image

log = logging.getLogger(__name__)

FINGERPRINT_VERSION = 1


@dataclass
class ExtractResult:
    """What ``extract`` did: counts per split and class, computed vs reused, quarantined, timing."""

    output: Path
    rows: int
    per_split: dict[str, int]
    per_class: dict[str, dict[str, int]]
    computed: int
    reused: int
    quarantine: list[store.QuarantineEntry]
    seconds: float
    class_names: list[str] = field(default_factory=list)
    compute_seconds: float = 0.0  # building the model, decoding and forward passes

    @property
    def images_per_s(self) -> float:
        """Images computed per second of computing (model start-up included)."""
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else 0.0


@dataclass
class _File:
    """An image file of the listing: its stat, and its content hash once known."""

    sample: Sample
    size: int
    mtime_ns: int
    sha256: str | None = None  # None until a worker has read a file the cache does not know


#: what a worker returns for a file whose content is already in the pool or taken by another file
_KNOWN = "known"

#: files larger than this are hashed and decoded from disk in two passes instead of read into memory
READ_WHOLE_LIMIT = 64 << 20


def fingerprint_fields(config: ExtractConfig, backbone) -> dict:
    """Everything that changes the vectors; its hash is the cache's fingerprint."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        **backbone.identity(),
        "preprocessing": config.preprocess.to_dict(),
        "precision": config.precision,
    }


def fingerprint_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def extract(config: ExtractConfig, backbone=None, progress: bool = False) -> ExtractResult:
    """Extract (or update) the feature cache ``config.output`` from ``config.data_dir``.

    ``backbone`` needs ``identity() -> dict`` and ``build() -> embed``, where ``embed`` maps
    uint8 (n, s, s, 3) to float32 (n, dim); the default is the frozen Xception of ``config``.
    The model is built only when some image needs computing.
    """
    start = time.perf_counter()
    if backbone is None:
        from featcache.backbone import backbone_for

        backbone = backbone_for(config.weights, config.image_size, config.precision, config.runtime)
    dataset = scan(config.data_dir, config.manifest, config.allow_outside)
    fields = fingerprint_fields(config, backbone)
    fingerprint = fingerprint_of(fields)
    _prepare_output(config.output)
    with store.CacheLock(config.output):
        store.sweep_temporaries(config.output)
        pool, old = _open_pool(config, fingerprint, fields)
        try:
            files, unreadable = _stat_all(dataset, _stat_memo(old))
            compute_start = time.perf_counter()
            computed, more_unreadable = _compute(files, pool, backbone, config, fingerprint, progress)
            compute_seconds = time.perf_counter() - compute_start
            pool.add_parts(store.parts_dir(config.output), fingerprint)
            hashed = [f for f in files if f.sha256 is not None]
            _assign_splits(hashed, config)
            rows, quarantine = _assemble(dataset, hashed, unreadable + more_unreadable, pool)
            if config.strict and quarantine:
                raise BadImagesError(_strict_message(quarantine))
            attrs = _attrs(config, dataset, fields, fingerprint, old)
            store.write_cache(config.output, attrs, dataset.class_names, rows, pool, quarantine)
        finally:
            pool.close()
        store.remove_parts(store.parts_dir(config.output))
    result = _result(config, dataset, rows, quarantine, computed, time.perf_counter() - start)
    result.compute_seconds = compute_seconds
    return result


def _prepare_output(output: Path) -> None:
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder of {output} ({exc.strerror}); choose another -o") from None
    if output.is_dir():
        raise ConfigError(f"output {output} is a folder; pass a file path such as {output / 'features.h5'}")
    if not os.access(output.parent, os.W_OK):
        raise ConfigError(f"cannot write to {output.parent}; choose another -o")


def _open_pool(config: ExtractConfig, fingerprint: str, fields: dict):
    """Index reusable vectors (existing cache + committed parts); refuse mismatched settings."""
    parts = store.parts_dir(config.output)
    old = _read_existing(config, fingerprint, fields)
    stale = store.part_fingerprints(parts) - {fingerprint}
    if stale and not config.overwrite:
        raise FingerprintMismatch(
            f"{parts} holds an unfinished run made with other settings; rerun it with those settings, "
            f"or pass --overwrite to discard it"
        )
    if stale:
        _drop_stale_parts(parts, fingerprint)
    pool = store.VectorPool()
    if old is not None:
        pool.add_cache(config.output)
    pool.add_parts(parts, fingerprint)
    return pool, old


def _read_existing(config: ExtractConfig, fingerprint: str, fields: dict):
    try:
        found = store.read_fingerprint(config.output)
    except CacheError:
        if config.overwrite:
            return None
        raise
    if found is None:
        return None
    if found != fingerprint:
        if config.overwrite:
            return None
        old = store.read_cache(config.output, features=False)
        raise FingerprintMismatch(_mismatch_message(config.output, old.attrs, fields))
    return store.read_cache(config.output, features=False)


def _mismatch_message(output: Path, attrs: dict, fields: dict) -> str:
    try:
        before = json.loads(attrs.get("fingerprint_fields", "{}"))
    except ValueError:
        before = {}
    flat_before, flat_now = _flatten(before), _flatten(fields)
    changed = sorted(k for k in flat_now if flat_before.get(k) != flat_now[k])
    what = ", ".join(f"{k}: {flat_before.get(k)!r} -> {flat_now[k]!r}" for k in changed) or "settings"
    return (
        f"{output} was made with other settings ({what}); vectors of different settings never mix — "
        f"write to another file with -o, or pass --overwrite to replace it"
    )


def _flatten(fields: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in fields.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _drop_stale_parts(parts: Path, fingerprint: str) -> None:
    import h5py

    for part in store.list_parts(parts):
        try:
            with h5py.File(part, "r") as h5:
                keep = h5.attrs["fingerprint"] == fingerprint
        except (OSError, KeyError):
            keep = False
        if not keep:
            part.unlink(missing_ok=True)


def _stat_memo(old: store.Cache | None) -> dict[str, tuple[int, int, str]]:
    """path -> (size, mtime_ns, sha256) of the existing cache, to skip re-reading unchanged files."""
    if old is None:
        return {}
    r = old.rows
    return {p: (s, m, h) for p, s, m, h in zip(r.path, r.size, r.mtime_ns, r.sha256)}


def _stat_all(dataset: Dataset, memo: dict) -> tuple[list[_File], list[store.QuarantineEntry]]:
    """Every listed file with its stat; the hash is filled in from the cache when size and mtime match."""
    files, unreadable = [], []
    for sample in dataset.samples:
        try:
            st = (dataset.root / sample.relpath).stat()
        except OSError as exc:
            unreadable.append(store.QuarantineEntry(sample.relpath, f"cannot read file: {exc.strerror}"))
            continue
        known = memo.get(sample.relpath)
        same = known is not None and known[:2] == (st.st_size, st.st_mtime_ns)
        files.append(_File(sample, st.st_size, st.st_mtime_ns, known[2] if same else None))
    return files, unreadable


def _assign_splits(hashed: list[_File], config: ExtractConfig) -> None:
    for item in hashed:
        if item.sample.split is None:
            split = split_for_hash(item.sha256, config.val_fraction, config.test_fraction)
            item.sample = Sample(item.sample.relpath, item.sample.label, split)


class _Claims:
    """Content hashes some worker has taken on in this run (thread-safe); the pool's count as taken."""

    def __init__(self, pool: store.VectorPool):
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
class _Batch:
    """Up to a batch of decoded images (and bad ones) to embed and commit, and the files it covered."""

    shas: list[str] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)
    bad: list[tuple[str, str]] = field(default_factory=list)
    files: int = 0


def _compute(files: list[_File], pool, backbone, config: ExtractConfig, fingerprint: str, progress: bool):
    """Read, hash, decode and embed the files the cache does not know yet, in listing order.

    Worker threads read each new file once: they hash its bytes, skip contents the pool holds or
    another file took, and decode the rest. The main thread embeds full batches while the workers
    go ahead (a bounded window) and a writer thread commits each batch as a part, so reading,
    hashing, decoding and HDF5 writes overlap the forward passes; memory stays bounded. The model
    is built only when a first image needs it. Returns (vectors computed, unreadable files).
    """
    new = [f for f in files if f.sha256 is None]
    unreadable: list[store.QuarantineEntry] = []
    if not new:
        return 0, unreadable
    embed, writer, written = None, store.PartWriter(store.parts_dir(config.output), fingerprint), None
    priority = DecodePriority()
    with (
        _progress_bar(len(new), progress) as bar,
        ThreadPoolExecutor(config.workers, initializer=priority.lower) as workers,
        ThreadPoolExecutor(1) as committer,
    ):
        prepared = _prepared(workers, new, config, _Claims(pool), priority, window=4 * config.batch_size)
        for batch in _batches(prepared, config.batch_size, unreadable):
            if batch.shas or batch.bad:
                if embed is None and batch.pixels:
                    embed = backbone.build()
                vectors = _embed(embed, batch.pixels)
                if written is not None:
                    written.result()  # at most one part in flight; a failed write stops the run
                written = committer.submit(writer.write, batch.shas, vectors, batch.bad)
            bar.update(batch.files)
        if written is not None:
            written.result()
    writer.close()
    return writer.rows_written, unreadable


def _prepared(workers, new: list[_File], config: ExtractConfig, claims: _Claims, priority, window: int):
    """Yield (file, sha256, outcome) in listing order, keeping ``window`` files in flight."""
    pending: deque = deque()
    root, spec = config.data_dir, config.preprocess
    for item in new:
        pending.append((item, workers.submit(_prepare_one, root / item.sample.relpath, item.size, spec, claims)))
        if len(pending) >= window:
            first, future = pending.popleft()
            yield first, *priority.wait(future)
    while pending:
        first, future = pending.popleft()
        yield first, *priority.wait(future)


def _prepare_one(path: Path, size: int, spec: PreprocessSpec, claims: _Claims):
    """(sha256, pixels | reason | _KNOWN) of one file, or (None, reason) when it cannot be read."""
    try:
        if size > READ_WHOLE_LIMIT:
            sha, source = file_sha256(path), path
        else:
            source = path.read_bytes()
            sha = hashlib.sha256(source).hexdigest()
    except OSError as exc:
        return None, f"cannot read file: {exc.strerror}"
    if not claims.take(sha):
        return sha, _KNOWN
    try:
        return sha, decode_image(source, spec)
    except ImageDecodeError as exc:
        return sha, str(exc)


def _batches(prepared, size: int, unreadable: list):
    """Group prepared files into batches of ``size`` images (or bad images); files that cannot be
    read go to ``unreadable``; every file gets its hash."""
    batch = _Batch()
    for item, sha, outcome in prepared:
        batch.files += 1
        if sha is None:
            unreadable.append(store.QuarantineEntry(item.sample.relpath, outcome))
            continue
        item.sha256 = sha
        if isinstance(outcome, np.ndarray):
            batch.shas.append(sha)
            batch.pixels.append(outcome)
        elif outcome is not _KNOWN:
            batch.bad.append((sha, outcome))
        if len(batch.shas) == size or len(batch.bad) >= size:
            yield batch
            batch = _Batch()
    if batch.files:
        yield batch


class DecodePriority:
    """Decoding threads yield the CPU to the backbone's threads, without ever starving.

    On Linux the threads run under SCHED_IDLE: they use only the cycles the forward pass leaves
    idle and never preempt its threads (a preempted thread stalls the other at the next sync
    point). When the main thread has waited ``patience`` seconds for a decode, other processes
    are taking the CPU, and the threads are raised to an ordinary low priority (nice 10) for the
    rest of the run. Elsewhere, or where not allowed, they run at ordinary priority.
    """

    def __init__(self, patience: float = 0.25):
        self.patience = patience
        self.raised = False
        self._threads: list[int] = []
        self._lock = threading.Lock()

    def lower(self) -> None:
        """Thread initializer of the decoding pool."""
        tid = threading.get_native_id()
        with self._lock:
            self._threads.append(tid)
            _set_priority(tid, idle=not self.raised)

    def wait(self, future):
        """``future.result()``, raising the decoding threads if it keeps the main thread waiting."""
        try:
            return future.result(timeout=self.patience)
        except WaitedTooLong:
            self.raise_()
            return future.result()

    def raise_(self) -> None:
        with self._lock:
            if not self.raised:
                self.raised = True
                log.debug("decoding threads were starved; raising them to nice 10")
                for tid in self._threads:
                    _set_priority(tid, idle=False)


def _set_priority(tid: int, idle: bool) -> None:
    try:
        policy = os.SCHED_IDLE if idle else os.SCHED_OTHER
        os.sched_setscheduler(tid, policy, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux, or not allowed
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, 10)
    except (AttributeError, OSError):
        pass


def _embed(embed, pixels: list[np.ndarray]) -> np.ndarray:
    return embed(np.stack(pixels)) if pixels else np.zeros((0, 0), dtype=np.float32)


def _progress_bar(total: int, progress: bool):
    import sys

    from tqdm import tqdm

    enabled = progress and sys.stderr.isatty()
    return tqdm(total=total, unit="img", desc="extract", disable=not enabled, smoothing=0.1)


def _assemble(dataset, hashed, unreadable, pool):
    """Rows of the new cache in listing order, and its quarantine."""
    index = {name: i for i, name in enumerate(dataset.class_names)}
    rows, quarantine = store.Rows(), [store.QuarantineEntry(p, r) for p, r in dataset.rejected]
    quarantine += unreadable
    for item in hashed:
        if item.sha256 in pool.quarantine and item.sha256 not in pool:
            quarantine.append(store.QuarantineEntry(item.sample.relpath, pool.quarantine[item.sha256], item.sha256))
            continue
        s = item.sample
        rows.path.append(s.relpath)
        rows.sha256.append(item.sha256)
        rows.label.append(index[s.label])
        rows.split.append(s.split)
        rows.size.append(item.size)
        rows.mtime_ns.append(item.mtime_ns)
    return rows, quarantine


def _strict_message(quarantine) -> str:
    first = quarantine[0]
    return (
        f"{len(quarantine)} file(s) could not be used, first {first.path}: {first.reason}; "
        f"fix or remove them, or run without --strict to skip them"
    )


def _attrs(config: ExtractConfig, dataset: Dataset, fields: dict, fingerprint: str, old) -> dict:
    now = datetime.now(UTC).isoformat(timespec="seconds")
    created = old.attrs.get("created_at", now) if old is not None else now
    return {
        "fingerprint": fingerprint,
        "fingerprint_fields": json.dumps(fields, sort_keys=True),
        "backbone": config.backbone,
        "pooling": fields["pooling"],
        "weights": _weights_location(config.weights),
        "weights_id": fields["weights_id"],
        "image_size": config.image_size,
        "interpolation": config.interpolation,
        "preprocessing": json.dumps(config.preprocess.to_dict(), sort_keys=True),
        "precision": config.precision,
        "dtype": "float32",
        "feature_dim": fields["feature_dim"],
        "tensorflow_version": _version("tensorflow"),
        "keras_version": _version("keras"),
        "featcache_version": _version("featcache"),
        "created_at": created,
        "updated_at": now,
        "data_dir": str(Path(config.data_dir).resolve()),
        "layout": dataset.layout,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
    }


def _weights_location(weights: str) -> str:
    """A weights file as an absolute path, so later stages find it from any folder."""
    if weights in ("imagenet", "none"):
        return weights
    return str(Path(weights).expanduser().resolve())


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def _result(config, dataset, rows, quarantine, computed, seconds) -> ExtractResult:
    per_split = Counter(rows.split)
    per_class: dict[str, dict[str, int]] = {}
    for split, label in zip(rows.split, rows.label):
        name = dataset.class_names[label]
        per_class.setdefault(split, Counter())[name] += 1
    return ExtractResult(
        output=config.output,
        rows=len(rows),
        per_split={s: per_split.get(s, 0) for s in ("train", "validation", "test")},
        per_class={s: dict(c) for s, c in per_class.items()},
        computed=computed,
        reused=max(len(rows) - computed, 0),
        quarantine=quarantine,
        seconds=seconds,
        class_names=dataset.class_names,
    )
