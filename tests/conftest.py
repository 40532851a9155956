"""Shared fixtures: tiny synthetic datasets, a fake backbone, and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DATA = Path(os.environ.get("FEATCACHE_DATA") or SHARED / "data" / "clothing-dataset-small")
REAL_WEIGHTS = Path(SHARED / "weights" / "xception_imagenet_notop.weights.h5")

CLASS_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "fox": (40, 40, 200)}


class FakeBackbone:
    """Stands in for Xception: 16 colour statistics per image, instant, deterministic."""

    dim = 16

    def __init__(self, tag: str = "fake"):
        self.tag = tag
        self.built = 0

    def identity(self) -> dict:
        return {"backbone": self.tag, "pooling": "none", "weights_id": "none", "feature_dim": self.dim}

    def build(self):
        self.built += 1
        return fake_embed


def fake_embed(batch: np.ndarray) -> np.ndarray:
    x = batch.astype(np.float32) / 255.0
    h, w = x.shape[1] // 2, x.shape[2] // 2
    quads = [x[:, :h, :w], x[:, :h, w:], x[:, h:, :w], x[:, h:, w:]]
    feats = [q.mean(axis=(1, 2)) for q in quads] + [x.std(axis=(1, 2)), x.mean(axis=(1, 2, 3))[:, None]]
    return np.concatenate(feats, axis=1).astype(np.float32)


def write_image(path: Path, colour, seed: int, size: int = 24, fmt: str | None = None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 25, (size, size + 4, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(path, format=fmt)
    return path


def make_split_dataset(root: Path, counts=None, classes=("cat", "dog"), start_seed: int = 0) -> Path:
    """train/validation/test folders of class folders with small coloured JPEGs and PNGs."""
    counts = counts or {"train": 6, "validation": 2, "test": 2}
    seed = start_seed
    for split, n in counts.items():
        for label in classes:
            for i in range(n):
                seed += 1
                suffix = ".png" if i % 3 == 2 else ".jpg"
                write_image(root / split / label / f"{label}_{i:03d}{suffix}", CLASS_COLOURS[label], seed)
    return root


@pytest.fixture
def split_data(tmp_path) -> Path:
    return make_split_dataset(tmp_path / "data")


@pytest.fixture
def fake_backbone() -> FakeBackbone:
    return FakeBackbone()


def require_real():
    if not (REAL_DATA.is_dir() and REAL_WEIGHTS.is_file()):
        pytest.skip(f"real data or weights not found beside the repository ({SHARED})")


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """The clothing dataset extracted once per test run with the real weights at 150 px."""
    require_real()
    from featcache.api import extract

    out = tmp_path_factory.mktemp("real") / "clothing.h5"
    extract(REAL_DATA, out, weights=str(REAL_WEIGHTS), image_size=150)
    return out
