"""Tiny feature caches for the stage-two tests: made by extract with the fake backbone, or by hand."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from featcache.api import extract
from featcache.cache.layout import Rows, write_cache
from tests.conftest import FakeBackbone, make_split_dataset


def tiny_cache(root: Path, counts=None, classes=("cat", "dog"), tag: str = "fake", start_seed: int = 0) -> Path:
    """A cache of small coloured images embedded by the 16-d fake backbone."""
    data = make_split_dataset(root / "data", counts=counts, classes=classes, start_seed=start_seed)
    out = root / "features.h5"
    extract(data, out, backbone=FakeBackbone(tag))
    return out


class _Pool:
    """What ``write_cache`` needs of a vector pool: ``dim`` and ``gather``."""

    def __init__(self, vectors: dict[str, np.ndarray], dim: int):
        self.vectors, self.dim = vectors, dim

    def gather(self, sha256s) -> np.ndarray:
        return np.stack([self.vectors[s] for s in sha256s]) if len(sha256s) else np.zeros((0, self.dim), np.float32)


def handmade_cache(path: Path, labels, splits, class_names, dim: int = 4, seed: int = 0) -> Path:
    """A cache written through the store with any labels and splits (extract refuses some of these)."""
    rng = np.random.default_rng(seed)
    rows = Rows()
    vectors = {}
    for i, (label, split) in enumerate(zip(labels, splits)):
        sha = hashlib.sha256(f"row-{i}".encode()).hexdigest()
        vectors[sha] = (rng.normal(size=dim) + 3 * label).astype(np.float32)
        rows.path.append(f"{split}/{class_names[label]}/{i}.jpg")
        rows.sha256.append(sha)
        rows.label.append(int(label))
        rows.split.append(split)
        rows.size.append(100)
        rows.mtime_ns.append(0)
    attrs = {"fingerprint": "handmade", "preprocessing": "{}", "weights": "none", "weights_id": "none"}
    write_cache(path, {**attrs, "image_size": 71, "feature_dim": dim}, class_names, rows, _Pool(vectors, dim), [])
    return path
