"""Stage one: run the frozen backbone once over every image of a data folder and commit the vectors to its cache."""

from __future__ import annotations

import gc
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from featcache.cache.keys import KeyIndex
from featcache.cache.layout import (
    MTIME,
    PATH,
    SHA256,
    SIZE,
    SPLIT,
    Cache,
    EntryWriter,
    QuarantineEntry,
    Rows,
    read_cache,
    read_columns,
    read_fingerprint,
    read_views,
    row_blocks,
    unchanged,
    write_cache,
)
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
from featcache.extraction.augmentation import ViewsDone, drop_views, update_views
from featcache.extraction.dataset import Dataset, Sample, Walk, check_found, plan_walk, scan, splits_for_hashes
from featcache.extraction.filestat import FileStats, reason
from featcache.extraction.fingerprint import fingerprint_fields, fingerprint_of, mismatch_message
from featcache.extraction.pipeline import ListedFile, compute
from featcache.extraction.row_hashes import HASH_WIDTH, RowHashes
from featcache.extraction.update import NotInWalkOrder, in_walk_order, settle, survey, write_rows
from featcache.versions import cpu_name, package_version

#: rows of the existing cache whose paths are looked up among the listed ones at once (the lookup's
#: temporaries, a few tens of bytes a row, stay small)
PATH_BLOCK_ROWS = 1 << 14


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
    walk = None if config.manifest is not None else plan_walk(config.data_dir, config.allow_outside)
    if walk is not None:
        check_found(walk.root, walk.any(), walk.class_names)  # before any folder is made
    fields = fingerprint_fields(config, backbone)
    _prepare_output(config.output)
    with CacheLock(config.output):
        sweep_temporaries(config.output)
        adopt_legacy_parts(config.output)
        result = _update_walked(config, walk, backbone, fields, progress) if walk and not config.augment else None
        if result is None:  # a manifest, views, or an existing cache the walk cannot be read alongside
            result = _update_listed(config, backbone, fields, progress)
    result.seconds = time.perf_counter() - start
    return result


def _update_listed(config: ExtractConfig, backbone, fields, progress) -> ExtractResult:
    """The update of a cache from the listing of the data folder (or manifest), held whole."""
    with paused_gc():
        dataset = scan(config.data_dir, config.manifest, config.allow_outside)
    # the files are stat-ed (by helper processes, for a long listing) while the existing cache is read
    files = ([], 0) if config.assume_unchanged else (dataset.by_folder(), len(dataset))
    with FileStats.start(*files) as stats:
        return _update(config, dataset, stats, backbone, fields, progress)


def _update_walked(config: ExtractConfig, walk: Walk, backbone, fields, progress) -> ExtractResult | None:
    """The update of a cache from a walk of the data folder, a folder at a time (see
    :mod:`featcache.extraction.update`); None, before anything is written, when the existing cache is not
    one it can update."""
    fingerprint, folder = fingerprint_of(fields), shards_dir(config.output)
    old = _read_existing(config, fingerprint, fields, located=False)
    if not in_walk_order(old) or (old is not None and read_views(config.output) is not None):
        return None
    pool = VectorPool()
    try:
        found = _surveyed(config, walk, pool, old, fingerprint)
        compute_start = time.perf_counter()
        computed = _compute(found.new, pool, backbone, config, fields, progress)
        compute_seconds = time.perf_counter() - compute_start
        pool.add_shards(folder, fingerprint)
        hashes = [computed.hashes.get(item.sample.relpath, "") for item in found.new]
        settled, bad = settle(found, hashes, pool, ShardWriter(folder, fingerprint), old)
        pool.close()
        quarantine = [QuarantineEntry(p, r) for p, r in walk.rejected] + bad + found.unreadable + computed.unreadable
        if config.strict and quarantine:
            raise BadImagesError(_strict_message(quarantine))
        attrs = cache_attributes(config, walk.layout, fields, old.attrs.get("created_at") if old else None)
        attrs |= _speed(old, computed.vectors, compute_seconds)
        same = old is not None and found.reused == old.n_rows and not found.removed and not settled.kept
        written = _write_walked(config, walk, old, found, settled, attrs, quarantine, same)
    except NotInWalkOrder:
        return None
    finally:
        pool.close()
    remove_unreferenced(folder, settled.files)
    drop_views(config.output, None)
    return _walked_result(config, walk, written, quarantine, computed.vectors, compute_seconds)


def _surveyed(config: ExtractConfig, walk: Walk, pool: VectorPool, old: Cache | None, fingerprint: str):
    """The first walk's :class:`featcache.extraction.update.Survey`, with the pool of reusable vectors made."""
    intact = pool.add_cache_shards(config.output, old) if old is not None else np.zeros(0, dtype=bool)
    _use_unfinished(pool, shards_dir(config.output), fingerprint, config.overwrite)
    with paused_gc():
        found = survey(walk, old, intact, config.assume_unchanged)
    walk.check()
    check_found(walk.root, found.listed, walk.class_names)
    if found.new:
        pool.index_cache_keys()
    return found


def _walked_result(config, walk: Walk, written, quarantine, computed: int, compute_seconds: float) -> ExtractResult:
    return ExtractResult(
        output=config.output,
        rows=written.rows,
        per_split=written.per_split,
        per_class={split: per for split, per in written.per_class.items() if written.per_split[split]},
        computed=computed,
        reused=max(written.rows - computed, 0),
        quarantine=quarantine,
        seconds=0.0,
        class_names=walk.class_names,
        compute_seconds=compute_seconds,
    )


def _write_walked(config: ExtractConfig, walk: Walk, old: Cache | None, found, settled, attrs, quarantine, same):
    """Write the new entry file in a second pass over the existing one; when its rows are those of the existing
    one (``same``), its digest is taken first and nothing is written if nothing else changed either."""
    widths = {PATH: found.width, SHA256: HASH_WIDTH, SPLIT: 10}
    fractions = (config.val_fraction, config.test_fraction)
    finish = (attrs, walk.class_names, quarantine, settled.locations())
    if same:
        dry = EntryWriter(config.output, widths, write=False)
        written = write_rows(walk, old, found, settled, dry, fractions)
        if unchanged(old.attrs, dry.finish(*finish)):
            return written
    writer = EntryWriter(config.output, widths, expected=found.listed - len(found.unreadable))
    try:
        written = write_rows(walk, old, found, settled, writer, fractions)
        writer.finish(*finish)
    finally:
        writer.discard()
    return written


def _update(config: ExtractConfig, dataset: Dataset, stats: FileStats, backbone, fields, progress) -> ExtractResult:
    """Compute what the cache lacks, write the new entry file, delete shards it no longer uses."""
    fingerprint, folder = fingerprint_of(fields), shards_dir(config.output)
    with paused_gc():
        pool, old, at_hand = _open_pool(config, fingerprint, fields)
    try:
        with paused_gc():
            listing, unreadable = _listing(dataset, stats, old, at_hand, config.assume_unchanged, pool.index_cache_keys)
        unknown = np.flatnonzero(listing.reused_row < 0).tolist()
        new = [listing.listed_file(i, dataset.class_names) for i in unknown]
        compute_start = time.perf_counter()
        computed = _compute(new, pool, backbone, config, fields, progress)
        compute_seconds = time.perf_counter() - compute_start
        pool.add_shards(folder, fingerprint)
        old_views = _old_views(config, old)  # with the old rows' content hashes, read whole once for both uses
        with paused_gc():
            computed_hashes = [computed.hashes.get(item.sample.relpath, "") for item in new]
            stored = old_views[1] if old_views is not None else None
            hashes = RowHashes(config.output, listing.reused_row, computed_hashes, stored)
            rows, quarantine, reused = _assemble(
                dataset, listing, hashes, unknown, pool, config, unreadable + computed.unreadable
            )
            locations = _locate(pool, rows.sha256, reused, old, ShardWriter(folder, fingerprint))
            pool.close()  # what it knows of the existing rows is not needed to write the new entry file ...
            old = replace(old, locations=None) if old is not None else None  # ... nor where they lay
        views_start = time.perf_counter()
        with_hashes = replace(rows, sha256=rows.sha256.array()) if config.augment or old_views else rows
        views = update_views(config, with_hashes, old_views, fingerprint, backbone, progress)
        views_seconds = time.perf_counter() - views_start
        attrs = _attrs(config, dataset, fields, old) | _speed(old, computed.vectors, compute_seconds)
        previous = old.attrs if old is not None else None  # nothing is written when nothing changed
        write_cache(config.output, attrs, dataset.class_names, rows, locations, quarantine, views.views, previous)
    finally:
        pool.close()
    remove_unreferenced(folder, locations.files)
    drop_views(config.output, views.views)
    result = _result(config, dataset, rows, quarantine, computed.vectors, compute_seconds)
    result.views, result.views_seconds = views, views_seconds
    return result


@contextmanager
def paused_gc():
    """Pause Python's cycle collector while files are listed and rows indexed: objects made by the hundred
    thousand would set off collections that walk every live object again (listing 200,000 files took
    1.7-2.1 s with it, 1.5-1.8 s without, two runs each)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _old_views(config: ExtractConfig, old: Cache | None):
    """The existing cache's views and the content hashes of its rows, or None."""
    if old is None:
        return None
    views = read_views(config.output)
    return (views, read_columns(config.output, (SHA256,)).sha256) if views is not None else None


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
    The pool, the existing cache (or None) and which of its rows have their vector at hand."""
    folder = shards_dir(config.output)
    old = _read_existing(config, fingerprint, fields)
    pool, at_hand = VectorPool(), np.zeros(0, dtype=bool)
    try:
        if old is not None:
            at_hand = pool.add_cache(config.output, old)
        _use_unfinished(pool, folder, fingerprint, config.overwrite)
    except BaseException:
        pool.close()  # the entry file it keeps open
        raise
    return pool, old, at_hand


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


def _read_existing(config: ExtractConfig, fingerprint: str, fields: dict, located: bool = True) -> Cache | None:
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
    # no row: the paths, sizes and times are read while matching (_listing), the content hashes a block at a
    # time when the pool indexes them (only when some file is read, see VectorPool.index_cache_keys) and for
    # the rows reused (RowHashes)
    return read_cache(config.output, with_vectors=False, with_rows=False, located=located)


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
        return ListedFile(sample, int(self.size[i]), int(self.mtime_ns[i]))


def _listing(dataset: Dataset, stats: FileStats, old: Cache | None, at_hand: np.ndarray, assume_unchanged: bool,
             when_new=None):  # fmt: skip
    """Every listed file with its size and mtime and the row of ``old`` it reuses (a :class:`Listing`; a
    reused row's vector is ``at_hand``), and the files that cannot be read. Sizes and times come from
    ``stats`` (the walked folders' files), else (with ``assume_unchanged``) from the existing cache's row
    of the same path, else from a stat. ``when_new`` is called before they are waited for when some path
    is not in ``old``: what an update that adds files needs anyway is done meanwhile."""
    paths = dataset.paths
    known = _known_files(paths, old)
    if when_new is not None and old is not None and (known.row < 0).any():
        when_new()
    if dataset.folders and not assume_unchanged:
        size, mtime = stats.result()
        unreadable = [QuarantineEntry(os.fsdecode(paths[i]), reason(int(mtime[i]))) for i in np.flatnonzero(size < 0)]
    else:  # a manifest's files, or with assume_unchanged
        size, mtime, unreadable = _sizes_and_times(dataset, known if assume_unchanged else None)
    same = (known.row >= 0) & (known.size == size) & (known.mtime_ns == mtime)
    same[same] = at_hand[known.row[same]]
    reused = np.where(same, known.row, -1)
    listing = Listing(paths, dataset.labels, dataset.splits, size, mtime, reused)
    return (listing.take(np.flatnonzero(size >= 0)) if unreadable else listing), unreadable


class KnownFiles(NamedTuple):
    """For each listed file, the existing cache's row of the same path (-1: none) and that row's size and
    mtime, int64 (n,) each."""

    row: np.ndarray
    size: np.ndarray
    mtime_ns: np.ndarray


def _known_files(paths: np.ndarray, old: Cache | None) -> KnownFiles:
    """The :class:`KnownFiles` of the listed ``paths``. The existing cache's paths, sizes and times are read
    a block at a time and looked up among the listed paths, so they are never all held. A path the cache
    holds twice is known by its first row; a path listed twice (a manifest's) is known at each listing."""
    n = len(paths)
    if old is not None and old.n_rows:
        index = KeyIndex()  # a path listed twice is indexed at its first listing
        index.add(paths)  # each path's id: its position in the listing; made before the answers, which it outlives
    known = KnownFiles(np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64))
    if old is None or not old.n_rows:
        return known
    for start, block in row_blocks(old.path, (PATH, SIZE, MTIME), PATH_BLOCK_ROWS):
        listed = index.find(block.path)
        at, hit = np.unique(listed, return_index=True)  # the block's first row of each listed path ...
        new = (at >= 0) & (known.row[np.maximum(at, 0)] < 0)  # ... unless an earlier block had one
        at, hit = at[new], hit[new]
        known.row[at], known.size[at], known.mtime_ns[at] = start + hit, block.size[hit], block.mtime_ns[hit]
    if len(index) < n:
        first = index.find(paths)  # each listing's first listing of its path
        known = KnownFiles(*(column[first] for column in known))
    return known


def _sizes_and_times(dataset: Dataset, known: KnownFiles | None):
    """Size and mtime of each listed file (size -1: cannot be read), and the quarantine entries of those
    that cannot: from ``known`` (the existing cache's rows) where the path is known there, else a stat."""
    n = len(dataset)
    size, mtime = np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if known is not None:
        hit = np.flatnonzero(known.row >= 0)
        size[hit], mtime[hit] = known.size[hit], known.mtime_ns[hit]
    unreadable = []
    for i in np.flatnonzero(size < 0).tolist():
        try:
            st = os.stat(os.path.join(os.fsencode(dataset.root), dataset.paths[i]))
        except OSError as exc:
            unreadable.append(QuarantineEntry(os.fsdecode(dataset.paths[i]), f"cannot read file: {exc.strerror}"))
            continue
        size[i], mtime[i] = st.st_size, st.st_mtime_ns
    return size, mtime, unreadable


def _locate(pool: VectorPool, hashes: RowHashes, reused: np.ndarray, old: Cache | None, writer: ShardWriter):
    """Where the vector of each row lies: a reused row where it lay in the existing cache, the others found
    by content hash (every row, for a format-1 cache)."""
    if old is None or old.locations is None:
        return pool.locate(hashes.array(), writer)
    return pool.locate(hashes.computed, writer, (old.locations, reused))


def _assemble(dataset, listing: Listing, hashes: RowHashes, read: list[int], pool: VectorPool, config, unreadable):
    """Rows of the new cache in listing order (numpy columns; the content hashes as ``hashes`` of the rows
    kept), its quarantine (``unreadable`` are the files that could not be read) and the existing cache's row
    each reuses (-1: none); ``read`` are the files read in this run, whose hashes were computed in that
    order, the only ones that can be bad. With ``config.strict``, any file that cannot be used is an error."""
    quarantine = [QuarantineEntry(p, r) for p, r in dataset.rejected]
    keep = hashes.present()
    for i, sha in zip(read, hashes.computed.tolist()):
        sha = sha.decode()
        if sha and sha in pool.quarantine and sha not in pool:
            quarantine.append(QuarantineEntry(os.fsdecode(listing.paths[i]), pool.quarantine[sha], sha))
            keep[i] = False
    quarantine += unreadable
    if config.strict and quarantine:
        raise BadImagesError(_strict_message(quarantine))
    if not keep.all():
        kept = np.flatnonzero(keep)
        listing, hashes = listing.take(kept), hashes.take(kept)
    rows = Rows(
        path=listing.paths,
        sha256=hashes,
        label=listing.labels,
        split=_splits(listing.splits, hashes, config),
        size=listing.size,
        mtime_ns=listing.mtime_ns,
    )
    return rows, quarantine, listing.reused_row


def _splits(given: np.ndarray, hashes: RowHashes, config: ExtractConfig) -> np.ndarray:
    """Each row's split (bytes (n,)): from the layout, else from its content hash (read a block at a time)."""
    hashed = np.flatnonzero(given == b"")
    if not len(hashed):
        return given
    found, start = given.copy(), 0
    for block in hashes.in_blocks(hashed):
        at = hashed[start : start + len(block)]
        found[at] = splits_for_hashes(block, config.val_fraction, config.test_fraction)
        start += len(block)
    return found


def _strict_message(quarantine) -> str:
    first = quarantine[0]
    return (
        f"{len(quarantine)} file(s) could not be used, first {first.path}: {first.reason}; "
        f"fix or remove them, or run without --strict to skip them"
    )


def _speed(old: Cache | None, computed: int, seconds: float) -> dict:
    """Images computed per second by the last run that computed enough of them to tell (start-up in),
    and on which CPU: what ``compare`` sets beside each backbone's scores."""
    if computed >= 32 and seconds > 0:
        return {"images_per_s": round(computed / seconds, 2), "images_per_s_cpu": cpu_name()}
    keep = ("images_per_s", "images_per_s_cpu")
    return {k: old.attrs[k] for k in keep if old is not None and k in old.attrs}


def _attrs(config: ExtractConfig, dataset: Dataset, fields: dict, old: Cache | None) -> dict:
    created = old.attrs.get("created_at") if old is not None else None
    return cache_attributes(config, dataset.layout, fields, created)


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
        "data_dir": str(Path(config.data_dir).resolve()),
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
