"""Stage one's augmented views: K views of every train image, embedded once and kept beside the clean rows.

Views are keyed by (content hash, view number) and have a fingerprint of their own (the clean
fingerprint, the policy and the seed): adding views never touches the clean vectors, raising K
computes only the new views, and a run killed while computing views keeps every committed shard
of them (one per batch, as for the clean vectors). A run without ``--augment`` keeps the views the
cache has, and computes them for its new train images with the same policy and seed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.augment import AugmentPolicy, apply_view, policy_for, view_parameters, views_identity
from featcache.cache.layout import Rows, Views, decode_strings, views_folder
from featcache.cache.shards import ShardWriter, VectorPool, drop_other_shards, remove_unreferenced, view_key
from featcache.config import ExtractConfig
from featcache.extraction.pipeline import embed_pixels, in_order
from featcache.extraction.priority import DecodePriority
from featcache.extraction.store import open_source
from featcache.hashing import json_sha256
from featcache.images import ImageDecodeError, decode_image
from featcache.progress import progress_bar

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViewPlan:
    """How many views per train image, of which policy and seed, and their fingerprint."""

    count: int
    policy: AugmentPolicy
    seed: int
    fields: dict

    @property
    def fingerprint(self) -> str:
        return json_sha256(self.fields)

    def attrs(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "fingerprint_fields": json.dumps(self.fields, sort_keys=True),
            "policy": json.dumps(self.policy.to_dict(), sort_keys=True),
            "seed": self.seed,
            "count": self.count,
        }


@dataclass
class ViewsDone:
    """What the views step did: views in the new cache, computed, and files it could not read."""

    views: Views | None
    computed: int = 0
    failed: int = 0
    plan: ViewPlan | None = None
    replaced: bool = False


def view_plan(config: ExtractConfig, old: Views | None, fingerprint: str) -> ViewPlan | None:
    """The views this run keeps: what the options ask for, else what the cache has (None: no views)."""
    count = config.augment if config.augment is not None else (old.count if old is not None else 0)
    if not count:
        return None
    before = json.loads(old.attrs.get("policy", "{}")) if old is not None else {}
    if config.augment_policy is not None:
        policy = policy_for(config.augment_policy)
    elif before:
        policy = AugmentPolicy.from_dict({k: v for k, v in before.items() if k != "name"}, before.get("name", "custom"))
    else:
        policy = policy_for("lesson")
    seed = config.augment_seed if config.augment_seed is not None else int(old.attrs["seed"]) if old is not None else 0
    return ViewPlan(count, policy, seed, views_identity(policy, seed, fingerprint))


def update_views(
    config: ExtractConfig, rows: Rows, old: tuple[Views, list[str]] | None, fingerprint: str, backbone, progress: bool
) -> ViewsDone:
    """Views of every train row of ``rows`` as ``config`` and the old views ask; computes those missing.

    ``old`` is the existing cache's views with the content hashes of its rows, ``fingerprint`` the
    clean vectors' fingerprint; the model is built only when a view needs computing.
    """
    folder = views_folder(config.output)
    old_views = old[0] if old is not None else None
    plan = view_plan(config, old_views, fingerprint)
    if plan is None:
        return ViewsDone(None)
    replaced = old_views is not None and old_views.fingerprint != plan.fingerprint
    pool = VectorPool()
    try:
        if old is not None and not replaced:
            pool.add_views(config.output, old_views, old[1])
        drop_other_shards(folder, plan.fingerprint)
        pool.add_shards(folder, plan.fingerprint)
        train = np.flatnonzero(np.asarray(decode_strings(rows.split), dtype=object) == "train")
        sha = np.asarray(decode_strings(rows.sha256), dtype=object)
        missing = _missing(pool, train, sha, rows, plan.count)
        writer = ShardWriter(folder, plan.fingerprint)
        failed = _compute(missing, config, plan, writer, backbone, progress)
        pool.add_shards(folder, plan.fingerprint)
        row, view, keys = _layout(pool, train, sha, plan.count)
        views = Views(row, view, pool.locate(keys, writer), plan.attrs())
    finally:
        pool.close()
    return ViewsDone(views, writer.rows_written, failed, plan, replaced)


def _missing(pool: VectorPool, train: np.ndarray, sha: np.ndarray, rows: Rows, count: int) -> dict[str, tuple]:
    """Content hash -> (path of a train file with that content, view numbers the pool lacks)."""
    missing: dict[str, tuple] = {}
    for i in train.tolist():
        s = sha[i]
        if s in missing:
            continue
        lacking = [j for j in range(count) if view_key(s, j) not in pool]
        if lacking:
            missing[s] = (decode_strings([rows.path[i]])[0], lacking)
    return missing


def _layout(pool: VectorPool, train: np.ndarray, sha: np.ndarray, count: int):
    """Row, view number and key of every view the pool holds for the train rows, in row then view order."""
    row, view, keys = [], [], []
    for i in train.tolist():
        for j in range(count):
            key = view_key(sha[i], j)
            if key in pool:
                row.append(i)
                view.append(j)
                keys.append(key)
    return np.asarray(row, dtype=np.int64), np.asarray(view, dtype=np.int32), keys


def _compute(
    missing: dict, config: ExtractConfig, plan: ViewPlan, writer: ShardWriter, backbone, progress: bool
) -> int:
    """Decode each image once, transform it into its missing views in threads, embed them in batches and
    commit a shard per batch; returns how many images could not be read (their rows keep no views)."""
    total, source = sum(len(js) for _, js in missing.values()), open_source(config.data_dir)
    failed, embed, priority = 0, _LazyEmbed(backbone), DecodePriority()
    keys, pixels = [], []
    with (
        progress_bar(total, progress, "augment", smoothing=0.1) as bar,
        ThreadPoolExecutor(config.workers, initializer=priority.lower) as workers,
    ):

        def views(sha: str):
            path, js = missing[sha]
            return workers.submit(make_views, source, path, sha, js, config, plan)

        for sha, made in in_order(views, list(missing), priority, 4 * config.workers):
            if made is None:
                failed += 1
                continue
            for j, x in made:
                keys.append(view_key(sha, j))
                pixels.append(x)
                if len(keys) == config.batch_size:
                    writer.write(keys, embed(pixels))
                    bar.update(len(keys))
                    keys, pixels = [], []
        if keys:
            writer.write(keys, embed(pixels))
            bar.update(len(keys))
    return failed


def make_views(source, path: str, sha256: str, views: list[int], config: ExtractConfig, plan: ViewPlan):
    """[(j, float32 pixels)] of the views ``views`` of the image ``path`` of ``source`` (a
    :func:`featcache.extraction.store.open_source`); None when it cannot be read."""
    try:
        pixels = decode_image(source.read(path, -1)[1], config.preprocess)
    except (OSError, ImageDecodeError) as exc:
        log.warning("cannot make views of %s (%s); its row keeps no views", path, exc)
        return None
    shape = pixels.shape[:2]
    return [
        (j, apply_view(pixels, view_parameters(plan.policy, plan.seed, sha256, j, shape), plan.policy)) for j in views
    ]


class _LazyEmbed:
    """The backbone's embedder, built on the first batch."""

    def __init__(self, backbone):
        self.backbone, self.embed = backbone, None

    def __call__(self, pixels: list[np.ndarray]) -> np.ndarray:
        if self.embed is None:
            self.embed = self.backbone.build()
        return embed_pixels(self.embed, pixels)


def drop_views(cache_path: Path, views: Views | None) -> None:
    """Delete the view shards the cache's ``views`` do not use (all of them when it has none)."""
    remove_unreferenced(views_folder(cache_path), views.locations.files if views is not None else [])
