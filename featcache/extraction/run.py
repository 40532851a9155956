"""Stage one: run the frozen backbone once over every image of a data folder and commit the vectors to its cache."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featcache.cache.layout import (
    BLOCK_ROWS,
    MTIME,
    PATH,
    SHA256,
    SIZE,
    Cache,
    QuarantineEntry,
    Rows,
    read_cache,
    read_columns,
    read_fingerprint,
    read_views,
    write_cache,
)
from featcache.cache.lock import CacheLock
from featcache.cache.shards import (
    ShardWriter,
    VectorPool,
    drop_other_shards,
    remove_unreferenced,
    shard_fingerprints,
    shards_dir,
    sweep_temporaries,
)
from featcache.config import ExtractConfig
from featcache.errors import BadImagesError, CacheError, ConfigError, FingerprintMismatch
from featcache.extraction.augmentation import ViewsDone, drop_views, update_views
from featcache.extraction.dataset import Dataset, Sample, scan, splits_for_hashes, stat_files
from featcache.extraction.fingerprint import fingerprint_fields, fingerprint_of, mismatch_message
from featcache.extraction.pipeline import ListedFile, compute
from featcache.locations import is_url, shown_location
from featcache.versions import cpu_name, package_version

HASH_WIDTH = 64  # a sha256 in hex


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
    views: ViewsDone | None = None
    views_seconds: float = 0.0

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
        lines += self._views_lines()
        lines += [f"  quarantined {entry.path}: {entry.reason}" for entry in self.quarantine[:10]]
        if len(self.quarantine) > 10:
            lines.append(f"  ... and {len(self.quarantine) - 10} more (featcache info {self.output})")
        return "\n".join(lines)

    def _views_lines(self) -> list[str]:
        done = self.views
        if done is None or done.views is None:
            return []
        plan = done.plan
        lines = [
            f"views: {plan.count} per train image (policy {plan.policy.name}, seed {plan.seed}), "
            f"{len(done.views)} in all; computed {done.computed}, {self.views_seconds:.1f} s"
        ]
        if done.replaced:
            lines.append("  the views of the cache's former policy or seed were replaced")
        if done.failed:
            lines.append(f"  {done.failed} train image(s) could not be read again for views; their rows keep none")
        return lines


def extract(config: ExtractConfig, backbone=None, progress: bool = False) -> ExtractResult:
    """Extract (or update) the feature cache ``config.output`` from ``config.data_dir``.

    ``backbone`` is a :class:`featcache.backbones.Backbone`; the default is the frozen Xception of
    ``config``. The model is built only when some image needs computing.
    """
    start = time.perf_counter()
    if backbone is None:
        from featcache.backbones import backbone_for

        backbone = backbone_for(config.weights, config.image_size, config.precision, config.runtime, config.backbone)
    if config.engine == "ray":
        from featcache.extraction.ray_engine import require_ray

        require_ray()
    dataset = scan(config.data_dir, config.manifest, config.allow_outside)  # before any folder is made
    fields = fingerprint_fields(config, backbone)
    _prepare_output(config.output)
    with CacheLock(config.output):
        sweep_temporaries(config.output)
        result = _update(config, dataset, backbone, fields, progress)
    result.seconds = time.perf_counter() - start
    return result


def _update(config: ExtractConfig, dataset: Dataset, backbone, fields, progress) -> ExtractResult:
    """Compute what the cache lacks, write the new entry file, delete shards it no longer uses: for every
    input (walked folders, a manifest, views), the cache's row metadata read whole and matched by sorting."""
    fingerprint, folder = fingerprint_of(fields), shards_dir(config.output)
    pool, old, stored, at_hand = _open_pool(config, fingerprint, fields)
    try:
        listing, unreadable = _listing(dataset, stored, at_hand, config.assume_unchanged)
        stored_hashes = stored.sha256 if stored is not None else None  # the paths, sizes and times are done with
        del stored
        unknown = np.flatnonzero(listing.reused_row < 0).tolist()
        new = [listing.listed_file(i, dataset.class_names) for i in unknown]
        compute_start = time.perf_counter()
        computed = _compute(new, pool, backbone, config, fields, progress)
        compute_seconds = time.perf_counter() - compute_start
        pool.add_shards(folder, fingerprint)
        old_views = _old_views(config, old, stored_hashes)
        computed_hashes = [computed.hashes.get(f.sample.relpath, "") for f in new]
        hashes = _row_hashes(listing.reused_row, stored_hashes, computed_hashes)
        rows, quarantine, reused = _assemble(
            dataset, listing, hashes, unknown, pool, config, unreadable + computed.unreadable
        )
        reused = reused if old is not None and old.locations is not None else None  # (format 1: none in shards)
        locations = pool.locate(rows.sha256, ShardWriter(folder, fingerprint), reused)
        pool.close()  # what it knows of the existing rows is not needed to write the new entry file
        views_start = time.perf_counter()
        views = update_views(config, rows, old_views, fingerprint, backbone, progress)
        views_seconds = time.perf_counter() - views_start
        created = old.attrs.get("created_at") if old is not None else None
        attrs = cache_attributes(config, dataset.layout, fields, created) | _speed(
            old, computed.vectors, compute_seconds
        )
        previous = old.attrs if old is not None else None  # nothing is written when nothing changed
        write_cache(config.output, attrs, dataset.class_names, rows, locations, quarantine, views.views, previous)
    finally:
        pool.close()
    remove_unreferenced(folder, locations.files)
    drop_views(config.output, views.views)
    result = _result(config, dataset, rows, quarantine, computed.vectors, compute_seconds)
    result.views, result.views_seconds = views, views_seconds
    return result


def _old_views(config: ExtractConfig, old: Cache | None, stored_hashes: np.ndarray | None):
    """The existing cache's views and the content hashes of its rows, or None."""
    if old is None:
        return None
    views = read_views(config.output)
    return (views, stored_hashes) if views is not None else None


def _compute(new: list[ListedFile], pool: VectorPool, backbone, config: ExtractConfig, fields: dict, progress: bool):
    """Compute ``new`` with the engine of ``config``: threads of this process, or a Ray cluster."""
    if config.engine == "ray":
        from featcache.extraction.ray_engine import compute_on_ray

        return compute_on_ray(new, pool, backbone, config, fields, progress)
    return compute(new, pool, backbone, config, fingerprint_of(fields), progress)


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
    """Index reusable vectors (existing cache + shards of unfinished runs); refuse mismatched settings.
    The pool, the existing cache (or None), its rows' paths, hashes, sizes and times (numpy columns, or None)
    and which of its rows have their vector at hand."""
    folder = shards_dir(config.output)
    old = _read_existing(config, fingerprint, fields)
    pool, stored, at_hand = VectorPool(), None, np.zeros(0, dtype=bool)
    if old is not None:
        stored = read_columns(config.output, (PATH, SHA256, SIZE, MTIME))
        at_hand = pool.add_cache(config.output, old, stored.sha256)
    _use_unfinished(pool, folder, fingerprint, config.overwrite)
    return pool, old, stored, at_hand


def _use_unfinished(pool: VectorPool, folder: Path, fingerprint: str, overwrite: bool) -> None:
    """Index the shards of unfinished runs of ``fingerprint``; refuse (or, with ``overwrite``, delete) those
    made with other settings."""
    stale = shard_fingerprints(folder, skip=pool.known) - {fingerprint}
    if stale and not overwrite:
        raise FingerprintMismatch(
            f"{folder} holds an unfinished run made with other settings; rerun it with those settings, "
            f"or pass --overwrite to discard it"
        )
    if stale:
        drop_other_shards(folder, fingerprint)
    pool.add_shards(folder, fingerprint)


def _read_existing(config: ExtractConfig, fingerprint: str, fields: dict) -> Cache | None:
    """The existing cache's metadata (rows as arrays), or None when there is none to update."""
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
        old = read_cache(config.output, with_vectors=False, with_rows=False)
        raise FingerprintMismatch(mismatch_message(config.output, old.attrs, fields))
    return read_cache(config.output, with_vectors=False, with_rows=False)  # the rows: see _open_pool


class Listing(NamedTuple):
    """The listed images that could be stat-ed, as columns: paths (bytes), labels, splits (b"": by content
    hash), size and mtime (int64), and the row of the existing cache whose vector each reuses: same path,
    size and mtime, vector at hand (-1: none; the file is read)."""

    paths: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    size: np.ndarray
    mtime_ns: np.ndarray
    reused_row: np.ndarray

    def take(self, kept: np.ndarray) -> Listing:
        """The listing of the images ``kept`` (indices, increasing)."""
        return Listing(*(column[kept] for column in self))

    def listed_file(self, i: int, class_names: list[str]) -> ListedFile:
        split = self.splits[i].decode() or None
        sample = Sample(os.fsdecode(self.paths[i]), class_names[self.labels[i]], split)
        return ListedFile(sample, int(self.size[i]))


def _listing(dataset: Dataset, stored: Rows | None, at_hand: np.ndarray, assume_unchanged: bool):
    """Every listed file with its size and mtime and the row of the existing cache (``stored``: its paths,
    sizes and times) it reuses (a :class:`Listing`; a reused row's vector is ``at_hand``), and the files that
    cannot be read. Each file is stat-ed, but with ``assume_unchanged`` those the cache knows by path."""
    n, paths = len(dataset), dataset.paths
    known = _known_rows(paths, stored.path) if stored is not None else np.full(n, -1, dtype=np.int64)
    size, mtime = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    hit = np.flatnonzero(known >= 0) if assume_unchanged else []
    if len(hit):
        size[hit], mtime[hit] = stored.size[known[hit]], stored.mtime_ns[known[hit]]
    todo = np.flatnonzero(size < 0)
    if dataset.listed is not None:  # an object store's listing gave each object's size and version: no stat
        size, mtime = dataset.listed
        unreadable = []
    elif len(todo) == n:  # (every file: no copy of the paths)
        size, mtime, unreadable = stat_files(dataset.root, paths)
    else:
        size[todo], mtime[todo], unreadable = stat_files(dataset.root, paths[todo])
    for start in range(0, n if stored is not None else 0, BLOCK_ROWS):  # reused: unchanged, its vector at hand
        row, at = known[start : start + BLOCK_ROWS], slice(start, start + BLOCK_ROWS)
        hit = np.flatnonzero(row >= 0)
        old = row[hit]
        same = (stored.size[old] == size[at][hit]) & (stored.mtime_ns[old] == mtime[at][hit]) & at_hand[old]
        row[hit[~same]] = -1
    listing = Listing(paths, dataset.labels, dataset.splits, size, mtime, known)
    quarantine = [QuarantineEntry(path, reason) for path, reason in unreadable]
    return (listing.take(np.flatnonzero(size >= 0)) if unreadable else listing), quarantine


def _known_rows(paths: np.ndarray, stored: np.ndarray) -> np.ndarray:
    """For each listed path (bytes (n,)), the first row of the existing cache's paths ``stored`` that holds
    it, or -1; int64 (n,). A sort of the stored paths and a binary search of each listed one."""
    if not len(stored) or not len(paths):
        return np.full(len(paths), -1, dtype=np.int64)
    order = np.argsort(stored, kind="stable")  # a path stored twice is found at its first row
    at = np.searchsorted(stored, paths, sorter=order)
    known = order[np.minimum(at, len(order) - 1, out=at)]
    del order, at
    for start in range(0, len(paths), BLOCK_ROWS):  # compared a block at a time: no copy of every path
        block = known[start : start + BLOCK_ROWS]
        block[stored[block] != paths[start : start + BLOCK_ROWS]] = -1
    return known


def _row_hashes(reused: np.ndarray, stored_hashes: np.ndarray | None, computed: list[str]) -> np.ndarray:
    """The content hash of each listed row (``S64`` (n,)): a reused row's from ``stored_hashes`` (the existing
    cache's), the others ``computed`` in row order (b"" where the file could not be read)."""
    hashes = np.zeros(len(reused), dtype=f"S{HASH_WIDTH}")
    if stored_hashes is not None and len(stored_hashes):
        np.take(stored_hashes.astype(hashes.dtype, copy=False), reused, out=hashes, mode="clip")  # -1: set below
    hashes[reused < 0] = np.array(computed, dtype=f"S{HASH_WIDTH}").reshape(len(computed))
    return hashes


def _assemble(dataset, listing: Listing, hashes: np.ndarray, read: list[int], pool: VectorPool, config, unreadable):
    """Rows of the new cache in listing order (numpy columns), its quarantine (``unreadable`` are the files
    that could not be read) and the existing cache's row each reuses (-1: none); ``read`` are the files read
    in this run, the only ones that can be bad. With ``config.strict``, any file that cannot be used is an
    error."""
    quarantine = [QuarantineEntry(p, r) for p, r in dataset.rejected]
    keep = hashes != b""
    for i in read:
        sha = hashes[i].decode()
        if sha and sha in pool.quarantine and sha not in pool:
            quarantine.append(QuarantineEntry(os.fsdecode(listing.paths[i]), pool.quarantine[sha], sha))
            keep[i] = False
    quarantine += unreadable
    if config.strict and quarantine:
        raise BadImagesError(
            f"{len(quarantine)} file(s) could not be used, first {quarantine[0].path}: {quarantine[0].reason}; "
            f"fix or remove them, or run without --strict to skip them"
        )
    if not keep.all():
        kept = np.flatnonzero(keep)
        listing, hashes = listing.take(kept), hashes[kept]
    split = listing.splits.copy()
    hashed = split == b""  # no split folder: the content hash decides
    split[hashed] = splits_for_hashes(hashes[hashed], config.val_fraction, config.test_fraction)
    rows = Rows(listing.paths, hashes, listing.labels, split, listing.size, listing.mtime_ns)
    return rows, quarantine, listing.reused_row


def _speed(old: Cache | None, computed: int, seconds: float) -> dict:
    """Images computed per second by the last run that computed enough of them to tell (start-up in),
    and on which CPU: what ``compare`` sets beside each backbone's scores."""
    if computed >= 32 and seconds > 0:
        return {"images_per_s": round(computed / seconds, 2), "images_per_s_cpu": cpu_name()}
    keep = ("images_per_s", "images_per_s_cpu")
    return {k: old.attrs[k] for k in keep if old is not None and k in old.attrs}


def cache_attributes(config: ExtractConfig, layout: str, fields: dict, created_at: str | None = None) -> dict:
    """The attributes of a cache made with ``config`` from a data folder of ``layout``, whose fingerprint
    fields are ``fields``; ``created_at`` is kept from the cache being updated (else now)."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    created = created_at or now
    return {
        "fingerprint": fingerprint_of(fields),
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
        "data_dir": shown_location(config.data_dir) if is_url(config.data_dir) else str(config.data_dir.resolve()),
        "layout": layout,
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
