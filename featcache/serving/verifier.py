"""Checking that a cache still matches the live model: recompute sampled rows and compare the vectors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.cache.layout import Rows, read_cache, read_features, read_rows, read_views
from featcache.cache.shards import ShardProblem, check_shards, check_views
from featcache.config import VerifyConfig
from featcache.errors import CacheError
from featcache.hashing import file_sha256
from featcache.progress import batched
from featcache.serving.recipe import Recipe, decode, live_backbone
from featcache.versions import package_version

log = logging.getLogger(__name__)


@dataclass
class VerifyResult:
    """How the live model's vectors compare with the stored ones on ``compared`` sampled rows.

    ``max_rel_diff`` is the largest difference divided by the largest stored value of its row, so
    vectors of any scale are judged (random-weight vectors are ~1e-4, ImageNet ones ~1).

    ``skipped`` holds (path, reason) for sampled rows that could not be recomputed (file missing,
    changed since extraction, unreadable); they are not counted as disagreement. ``causes`` names
    what most likely made the vectors differ, most likely first (empty when they agree).
    """

    cache: Path
    sampled: int
    compared: int
    tolerance: float
    rel_tolerance: float
    weights: str
    weights_id: str
    max_abs_diff: float = 0.0
    max_rel_diff: float = 0.0
    min_cosine: float = 1.0
    worst_path: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    shard_problems: list[ShardProblem] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        close = self.max_abs_diff <= self.tolerance and self.max_rel_diff <= self.rel_tolerance
        return self.compared > 0 and close and not self.shard_problems

    def to_dict(self) -> dict:
        return {
            "cache": str(self.cache),
            "passed": self.passed,
            "sampled": self.sampled,
            "compared": self.compared,
            "max_abs_diff": self.max_abs_diff,
            "max_rel_diff": self.max_rel_diff,
            "min_cosine": self.min_cosine,
            "tolerance": self.tolerance,
            "rel_tolerance": self.rel_tolerance,
            "worst_path": self.worst_path,
            "weights": self.weights,
            "weights_id": self.weights_id,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "causes": self.causes,
            "shard_problems": [{"file": p.file, "reason": p.reason, "rows": p.rows} for p in self.shard_problems],
        }

    def summary(self) -> str:
        """The differences found, the verdict, skipped rows and likely causes: what ``featcache verify`` prints."""
        verdict = "OK" if self.passed else "MISMATCH"
        lines = [
            f"{self.cache}: recomputed {self.compared} of {self.sampled} sampled rows with weights {self.weights}",
            f"  max abs diff {self.max_abs_diff:.3g} (tolerance {self.tolerance:g}), "
            f"max relative diff {self.max_rel_diff:.3g} (tolerance {self.rel_tolerance:g}), "
            f"min cosine {self.min_cosine:.6f}: {verdict}",
        ]
        if self.worst_path and not self.passed:
            lines.append(f"  largest difference: {self.worst_path}")
        lines += [f"  skipped {path}: {reason}" for path, reason in self.skipped]
        if self.causes:
            lines.append("likely causes:")
            lines.extend(f"  - {cause}" for cause in self.causes)
        return "\n".join(lines)


def verify(config: VerifyConfig, backbone=None) -> VerifyResult:
    """Recompute ``config.sample`` random rows of ``config.cache`` and compare them with the stored vectors.

    ``backbone`` needs ``identity()`` and ``build() -> embed``; the default is Xception with the
    recorded weights (or ``config.weights`` / $FEATCACHE_WEIGHTS). Other weights are used, not
    refused: finding that they disagree is the point.
    """
    cache = read_cache(config.cache, with_vectors=False, with_rows=False)
    if not cache.n_rows:
        raise CacheError(f"{config.cache} has no rows to verify; extract some images into it first")
    recipe = Recipe.from_cache(cache.attrs, cache.class_names)
    rows = _sample_rows(cache.n_rows, config.sample, config.seed)
    root = config.data_dir or Path(cache.attrs["data_dir"])
    problems = check_shards(cache) + check_views(config.cache, read_views(config.cache))
    damaged = _damaged_rows(cache, problems, rows)
    sampled = dict(zip(rows, _rows_of(read_rows(config.cache, rows))))
    kept, pixels, skipped = _load_rows(sampled, [i for i in rows if i not in damaged], root, recipe)
    skipped += [(sampled[i][0], damaged[i]) for i in rows if i in damaged]
    live = live_backbone(recipe, config.weights, backbone)
    result = VerifyResult(
        cache=config.cache,
        sampled=len(rows),
        compared=len(kept),
        tolerance=config.tolerance,
        rel_tolerance=config.rel_tolerance,
        weights=str(live.weights),
        weights_id=live.weights_id,
        skipped=skipped,
        shard_problems=problems,
    )
    if kept:
        stored = read_features(config.cache, kept)
        recomputed = _embed(live.backbone.build(), pixels, config.batch_size)
        _compare(result, stored, recomputed, [sampled[i][0] for i in kept])
    if not result.passed:
        result.causes = likely_causes(result, recipe, live, cache.attrs, root)
    return result


def _damaged_rows(cache, problems: list[ShardProblem], rows: list[int]) -> dict[int, str]:
    """Row -> why its vector cannot be read, for those of ``rows`` whose shard is missing or damaged."""
    where = {name: i for i, name in enumerate(cache.locations.files)} if cache.locations is not None else {}
    bad = {where[p.file]: f"in damaged shard {p.file} ({p.reason})" for p in problems if p.file in where}
    if not bad or not rows:
        return {}
    index = cache.locations.index[np.asarray(rows, dtype=np.int64)]
    return {row: bad[shard] for row, shard in zip(rows, index.tolist()) if shard in bad}


def _sample_rows(n: int, sample: int, seed: int) -> list[int]:
    """``sample`` distinct row indices (all rows when fewer), drawn with a seeded generator, sorted."""
    chosen = np.random.default_rng(seed).choice(n, size=min(n, sample), replace=False)
    return sorted(int(i) for i in chosen)


def _rows_of(rows: Rows) -> list[tuple[str, str]]:
    return list(zip(rows.path, rows.sha256))


def _load_rows(sampled: dict[int, tuple[str, str]], indices, root: Path, recipe: Recipe):
    """Pixels of the sampled rows (row -> (path, sha256)) whose file is still the one that was extracted."""
    kept, pixels, skipped = [], [], []
    for i in indices:
        rel, sha = sampled[i]
        path = root / rel
        if not path.is_file():
            skipped.append((rel, "file not found"))
            continue
        if file_sha256(path) != sha:
            skipped.append((rel, "file changed since extraction"))
            continue
        decoded = decode(path, recipe.spec)
        if isinstance(decoded, str):
            skipped.append((rel, decoded))
            continue
        kept.append(i)
        pixels.append(decoded)
    return kept, pixels, skipped


def _embed(embed, pixels: list[np.ndarray], batch_size: int) -> np.ndarray:
    parts = [embed(np.stack(batch)) for batch in batched(pixels, batch_size)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def _compare(result: VerifyResult, stored: np.ndarray, recomputed: np.ndarray, paths: list[str]) -> None:
    """Fill in the largest absolute and relative differences, the smallest cosine and the worst row."""
    if stored.shape != recomputed.shape:
        result.max_abs_diff, result.max_rel_diff, result.min_cosine = float("inf"), float("inf"), float("nan")
        return
    a, b = stored.astype(np.float64), recomputed.astype(np.float64)  # float64 so equal rows give cosine 1
    row_diff = np.abs(a - b).max(axis=1)
    scale = np.abs(a).max(axis=1)
    rel = np.divide(row_diff, scale, out=np.where(row_diff > 0, np.inf, 0.0), where=scale > 0)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.divide((a * b).sum(axis=1), norms, out=np.where(row_diff == 0, 1.0, 0.0), where=norms > 0)
    worst = int(np.argmax(row_diff))
    result.max_abs_diff, result.max_rel_diff = float(row_diff[worst]), float(rel.max())
    result.min_cosine = float(np.clip(cosine, -1.0, 1.0).min())
    result.worst_path = paths[worst]


def likely_causes(result: VerifyResult, recipe: Recipe, live, attrs: dict, root: Path) -> list[str]:
    """What most likely made the live vectors differ from the stored ones, most likely first."""
    if result.shard_problems:
        rows = sum(p.rows for p in result.shard_problems)
        names = ", ".join(f"{p.file} ({p.reason})" for p in result.shard_problems[:3])
        return [f"damaged shards: {names}; {rows} row(s) affected — rerun featcache extract to compute them again"]
    if result.compared == 0:
        return [
            f"none of the {result.sampled} sampled images could be recomputed from {root}: "
            f"the data folder moved or changed; pass --data-dir, or re-extract"
        ]
    causes = []
    if not live.matches:
        causes.append(
            f"weights file: the cache was made with {recipe.weights} ({recipe.weights_id}) but the live model "
            f"uses {live.weights} ({live.weights_id}); pass --weights with the file the cache was made with"
        )
    if result.max_abs_diff == float("inf"):
        causes.append("feature size: the live backbone gives vectors of another length than the cache holds")
    for package in ("tensorflow", "keras"):
        then, now = attrs.get(f"{package}_version"), package_version(package)
        if then and then != now:
            causes.append(f"versions: the cache was made with {package} {then}, this is {package} {now}")
    spec, pillow = recipe.spec, package_version("pillow")
    causes.append(
        f"resize or decoding: the vectors were not made from {spec.image_size}x{spec.image_size} {spec.interpolation} "
        f"{spec.color} pixels as recorded (another image size, interpolation or Pillow version {pillow})"
    )
    causes.append("to rebuild the cache with the live model: featcache extract DATA_DIR -o CACHE --overwrite")
    return causes
