"""Stage one: run the frozen backbone once over every image of a data folder and commit the vectors to its cache."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from featcache.cache.layout import Cache, QuarantineEntry, Rows, read_cache, read_fingerprint, write_cache
from featcache.cache.lock import CacheLock
from featcache.cache.shards import (
    ShardWriter,
    VectorPool,
    adopt_legacy_parts,
    drop_other_shards,
    remove_unreferenced,
    shard_fingerprints,
    shards_dir,
    sweep_temporaries,
)
from featcache.config import ExtractConfig
from featcache.errors import BadImagesError, CacheError, ConfigError, FingerprintMismatch
from featcache.extraction.dataset import Dataset, Sample, scan, split_for_hash
from featcache.extraction.fingerprint import fingerprint_fields, fingerprint_of, mismatch_message
from featcache.extraction.pipeline import ListedFile, compute
from featcache.versions import package_version


@dataclass
class ExtractResult:
    """What ``extract`` did: counts per split and class, computed vs reused, quarantined, timing."""

    output: Path
    rows: int
    per_split: dict[str, int]
    per_class: dict[str, dict[str, int]]
    computed: int
    reused: int
    quarantine: list[QuarantineEntry]
    seconds: float
    class_names: list[str] = field(default_factory=list)
    compute_seconds: float = 0.0  # building the model, decoding and forward passes

    @property
    def images_per_s(self) -> float:
        """Images computed per second of computing (model start-up included)."""
        return self.computed / self.compute_seconds if self.compute_seconds > 0 else 0.0

    def summary(self) -> str:
        """Rows per split and class, computed and reused, quarantined files, time: what the command prints."""
        lines = [f"cache: {self.output}  ({self.rows} rows, {len(self.class_names)} classes)"]
        for split, count in self.per_split.items():
            if count:
                per = self.per_class.get(split, {})
                detail = ", ".join(f"{name} {per.get(name, 0)}" for name in self.class_names)
                lines.append(f"  {split:<10} {count:>7}   {detail}")
        rate = f", {self.images_per_s:.1f} images/s while computing" if self.computed else ""
        lines.append(
            f"computed {self.computed}, reused {self.reused}, quarantined {len(self.quarantine)}; "
            f"{self.seconds:.1f} s in all{rate}"
        )
        lines += [f"  quarantined {entry.path}: {entry.reason}" for entry in self.quarantine[:10]]
        if len(self.quarantine) > 10:
            lines.append(f"  ... and {len(self.quarantine) - 10} more (featcache info {self.output})")
        return "\n".join(lines)


def extract(config: ExtractConfig, backbone=None, progress: bool = False) -> ExtractResult:
    """Extract (or update) the feature cache ``config.output`` from ``config.data_dir``.

    ``backbone`` is a :class:`featcache.backbones.Backbone`; the default is the frozen Xception of
    ``config``. The model is built only when some image needs computing.
    """
    start = time.perf_counter()
    if backbone is None:
        from featcache.backbones import backbone_for

        backbone = backbone_for(config.weights, config.image_size, config.precision, config.runtime)
    dataset = scan(config.data_dir, config.manifest, config.allow_outside)
    fields = fingerprint_fields(config, backbone)
    _prepare_output(config.output)
    with CacheLock(config.output):
        sweep_temporaries(config.output)
        adopt_legacy_parts(config.output)
        result = _update(config, dataset, backbone, fields, progress)
    result.seconds = time.perf_counter() - start
    return result


def _update(config: ExtractConfig, dataset: Dataset, backbone, fields: dict, progress: bool) -> ExtractResult:
    """Compute what the cache lacks, write the new entry file, delete shards it no longer uses."""
    fingerprint = fingerprint_of(fields)
    pool, old = _open_pool(config, fingerprint, fields)
    folder = shards_dir(config.output)
    try:
        files, unreadable = _stat_all(dataset, _stat_memo(old, pool))
        compute_start = time.perf_counter()
        computed = compute([f for f in files if f.sha256 is None], pool, backbone, config, fingerprint, progress)
        compute_seconds = time.perf_counter() - compute_start
        pool.add_shards(folder, fingerprint)
        hashed = _with_splits(_with_hashes(files, computed.hashes), config)
        rows, quarantine = _assemble(dataset, hashed, unreadable + computed.unreadable, pool)
        if config.strict and quarantine:
            raise BadImagesError(_strict_message(quarantine))
        locations = pool.locate(rows.sha256, ShardWriter(folder, fingerprint))
        write_cache(
            config.output,
            _attrs(config, dataset, fields, fingerprint, old),
            dataset.class_names,
            rows,
            locations,
            quarantine,
        )
    finally:
        pool.close()
    remove_unreferenced(folder, locations.files)
    return _result(config, dataset, rows, quarantine, computed.vectors, compute_seconds)


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
    """Index reusable vectors (existing cache + shards of unfinished runs); refuse mismatched settings."""
    folder = shards_dir(config.output)
    old = _read_existing(config, fingerprint, fields)
    pool = VectorPool()
    if old is not None:
        pool.add_cache(config.output)
    stale = shard_fingerprints(folder, skip=pool.known) - {fingerprint}
    if stale and not config.overwrite:
        raise FingerprintMismatch(
            f"{folder} holds an unfinished run made with other settings; rerun it with those settings, "
            f"or pass --overwrite to discard it"
        )
    if stale:
        drop_other_shards(folder, fingerprint)
    pool.add_shards(folder, fingerprint)
    return pool, old


def _read_existing(config: ExtractConfig, fingerprint: str, fields: dict):
    try:
        found = read_fingerprint(config.output)
    except CacheError:
        if config.overwrite:
            return None
        raise
    if found is None:
        return None
    if found != fingerprint:
        if config.overwrite:
            return None
        old = read_cache(config.output, with_vectors=False)
        raise FingerprintMismatch(mismatch_message(config.output, old.attrs, fields))
    return read_cache(config.output, with_vectors=False)


def _stat_memo(old: Cache | None, pool: VectorPool) -> dict[str, tuple[int, int, str]]:
    """path -> (size, mtime_ns, sha256) of the existing cache's rows whose vector is at hand, to skip
    re-reading unchanged files (rows of a missing or damaged shard are read and computed again)."""
    if old is None:
        return {}
    r = old.rows
    return {p: (s, m, h) for p, s, m, h in zip(r.path, r.size, r.mtime_ns, r.sha256) if h in pool}


def _stat_all(dataset: Dataset, memo: dict) -> tuple[list[ListedFile], list[QuarantineEntry]]:
    """Every listed file with its size and mtime (from the listing, else a stat); the hash is filled in
    from the cache when both match."""
    files, unreadable = [], []
    for sample in dataset.samples:
        stat = dataset.stats.get(sample.relpath)
        if stat is None:
            try:
                st = os.stat(os.path.join(dataset.root, sample.relpath))
            except OSError as exc:
                unreadable.append(QuarantineEntry(sample.relpath, f"cannot read file: {exc.strerror}"))
                continue
            stat = (st.st_size, st.st_mtime_ns)
        known = memo.get(sample.relpath)
        same = known is not None and known[:2] == stat
        files.append(ListedFile(sample, *stat, known[2] if same else None))
    return files, unreadable


def _with_hashes(files: list[ListedFile], hashes: dict[str, str]) -> list[ListedFile]:
    """The files whose content hash is known, with the hashes the pipeline found filled in."""
    found = [f if f.sha256 else f._replace(sha256=hashes.get(f.sample.relpath)) for f in files]
    return [f for f in found if f.sha256 is not None]


def _with_splits(files: list[ListedFile], config: ExtractConfig) -> list[ListedFile]:
    """Files without a split from the layout get one from their content hash."""
    return [f if f.sample.split else f._replace(sample=_hash_split(f, config)) for f in files]


def _hash_split(item: ListedFile, config: ExtractConfig) -> Sample:
    split = split_for_hash(item.sha256, config.val_fraction, config.test_fraction)
    return Sample(item.sample.relpath, item.sample.label, split)


def _assemble(dataset, hashed, unreadable, pool):
    """Rows of the new cache in listing order, and its quarantine."""
    index = {name: i for i, name in enumerate(dataset.class_names)}
    rows, quarantine = Rows(), [QuarantineEntry(p, r) for p, r in dataset.rejected]
    quarantine += unreadable
    for item in hashed:
        if item.sha256 in pool.quarantine and item.sha256 not in pool:
            quarantine.append(QuarantineEntry(item.sample.relpath, pool.quarantine[item.sha256], item.sha256))
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
        "tensorflow_version": package_version("tensorflow"),
        "keras_version": package_version("keras"),
        "featcache_version": package_version("featcache"),
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


def _result(config, dataset, rows: Rows, quarantine, computed: int, compute_seconds: float) -> ExtractResult:
    per_split, per_class = rows.counts(dataset.class_names)
    return ExtractResult(
        output=config.output,
        rows=len(rows),
        per_split=per_split,
        per_class=per_class,
        computed=computed,
        reused=max(len(rows) - computed, 0),
        quarantine=quarantine,
        seconds=0.0,
        class_names=dataset.class_names,
        compute_seconds=compute_seconds,
    )
