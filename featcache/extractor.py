"""Stage one: run the frozen backbone once over every image and commit the vectors to the cache."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

from featcache import store
from featcache.config import ExtractConfig
from featcache.dataset import Dataset, Sample, file_sha256, scan, split_for_hash
from featcache.errors import BadImagesError, CacheError, ConfigError, FingerprintMismatch
from featcache.images import ImageDecodeError, PreprocessSpec, load_image

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
class _Hashed:
    sample: Sample
    sha256: str
    size: int
    mtime_ns: int


def fingerprint_fields(config: ExtractConfig, backbone) -> dict:
    """Everything that changes the vectors; its hash is the cache's fingerprint."""
    return {
        "fingerprint_version": FINGERPRINT_VERSION,
        **backbone.identity(),
        "preprocessing": config.preprocess.to_dict(),
        "precision": config.precision,
    }


def fingerprint_of(fields: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def extract(config: ExtractConfig, backbone=None, progress: bool = False) -> ExtractResult:
    """Extract (or update) the feature cache ``config.output`` from ``config.data_dir``.

    ``backbone`` needs ``identity() -> dict`` and ``build() -> embed``, where ``embed`` maps
    uint8 (n, s, s, 3) to float32 (n, dim); the default is the frozen Xception of ``config``.
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
        pool, old = _open_pool(config, fingerprint, fields)
        try:
            hashed, unreadable = _hash_all(dataset, _stat_memo(old))
            _assign_splits(hashed, config)
            todo = _todo(hashed, pool)
            computed, compute_start = 0, time.perf_counter()
            if todo:
                computed = _compute(todo, backbone, config, fingerprint, progress)
                pool.add_parts(store.parts_dir(config.output), fingerprint)
            compute_seconds = time.perf_counter() - compute_start
            rows, quarantine = _assemble(dataset, hashed, unreadable, pool)
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
    """path -> (size, mtime_ns, sha256) of the existing cache, to skip re-hashing unchanged files."""
    if old is None:
        return {}
    r = old.rows
    return {p: (s, m, h) for p, s, m, h in zip(r.path, r.size, r.mtime_ns, r.sha256)}


def _hash_all(dataset: Dataset, memo: dict) -> tuple[list[_Hashed], list[store.QuarantineEntry]]:
    hashed, unreadable = [], []
    for sample in dataset.samples:
        path = dataset.root / sample.relpath
        try:
            st = path.stat()
            known = memo.get(sample.relpath)
            if known and known[0] == st.st_size and known[1] == st.st_mtime_ns:
                sha = known[2]
            else:
                sha = file_sha256(path)
        except OSError as exc:
            unreadable.append(store.QuarantineEntry(sample.relpath, f"cannot read file: {exc.strerror}"))
            continue
        hashed.append(_Hashed(sample, sha, st.st_size, st.st_mtime_ns))
    return hashed, unreadable


def _assign_splits(hashed: list[_Hashed], config: ExtractConfig) -> None:
    for item in hashed:
        if item.sample.split is None:
            split = split_for_hash(item.sha256, config.val_fraction, config.test_fraction)
            item.sample = Sample(item.sample.relpath, item.sample.label, split)


def _todo(hashed: list[_Hashed], pool: store.VectorPool) -> list[tuple[str, str]]:
    """(sha256, relpath) of each distinct content not yet computed nor known to be bad."""
    seen, todo = set(), []
    for item in hashed:
        if item.sha256 in pool or item.sha256 in pool.quarantine or item.sha256 in seen:
            continue
        seen.add(item.sha256)
        todo.append((item.sha256, item.sample.relpath))
    return todo


def _compute(todo, backbone, config: ExtractConfig, fingerprint: str, progress: bool) -> int:
    """Embed batches here while worker threads decode ahead and a writer thread commits parts.

    Decoding, hashing and HDF5 writes overlap the forward pass, so the backbone does not wait
    for them; memory stays bounded (a window of decoded images, one batch being written).
    Returns the number of vectors computed.
    """
    embed = backbone.build()
    writer = store.PartWriter(store.parts_dir(config.output), fingerprint)
    spec, root, size = config.preprocess, config.data_dir, config.batch_size
    with (
        _progress_bar(len(todo), progress) as bar,
        ThreadPoolExecutor(config.workers, initializer=_yield_to_compute) as workers,
        ThreadPoolExecutor(1) as committer,
    ):
        written = None
        for shas, pixels, bad in _batches(_decoded(workers, todo, root, spec, window=4 * size), size):
            vectors = _embed(embed, pixels)
            if written is not None:
                written.result()  # at most one part in flight; a failed write stops the run
            written = committer.submit(_commit, writer, shas, vectors, bad)
            bar.update(len(shas) + len(bad))
        if written is not None:
            written.result()
    writer.close()
    return writer.rows_written


def _batches(decoded, size: int):
    """Group (sha256, pixels or reason) into (shas, pixels, bad) with ``size`` images or reasons."""
    shas, pixels, bad = [], [], []
    for sha, result in decoded:
        if isinstance(result, str):
            bad.append((sha, result))
        else:
            shas.append(sha)
            pixels.append(result)
        if len(shas) == size or len(bad) >= size:
            yield shas, pixels, bad
            shas, pixels, bad = [], [], []
    if shas or bad:
        yield shas, pixels, bad


def _yield_to_compute() -> None:
    """Lower a decoding thread's CPU priority (Linux): on few cores, the backbone's threads go first.

    Decoding then fills the gaps the forward pass leaves instead of stalling its threads; the
    window of decodes in flight keeps the next batch ready.
    """
    import threading

    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


def _decoded(workers, todo, root: Path, spec: PreprocessSpec, window: int):
    """Yield (sha256, pixels or reason) in ``todo`` order, keeping ``window`` decodes in flight."""
    pending: deque = deque()
    for sha, rel in todo:
        pending.append((sha, workers.submit(_decode_one, root / rel, spec)))
        if len(pending) >= window:
            sha0, future = pending.popleft()
            yield sha0, future.result()
    while pending:
        sha0, future = pending.popleft()
        yield sha0, future.result()


def _decode_one(path: Path, spec: PreprocessSpec):
    try:
        return load_image(path, spec)
    except ImageDecodeError as exc:
        return str(exc)


def _embed(embed, pixels: list[np.ndarray]) -> np.ndarray:
    return embed(np.stack(pixels)) if pixels else np.zeros((0, 0), dtype=np.float32)


def _commit(writer, shas, vectors, bad) -> None:
    writer.write(shas, vectors, bad)


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
