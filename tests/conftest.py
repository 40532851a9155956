"""Shared fixtures: tiny synthetic datasets, a fake backbone, and the real data in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_DATA = Path(os.environ.get("FEATCACHE_DATA") or SHARED / "data" / "clothing-dataset-small")
REAL_WEIGHTS = Path(os.environ.get("FEATCACHE_WEIGHTS") or SHARED / "weights" / "xception_imagenet_notop.weights.h5")
#: set by CI: without the real data and weights the real-data tests fail instead of skipping
REQUIRE_REAL = os.environ.get("FEATCACHE_REQUIRE_REAL", "") not in ("", "0")

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


_running: list = [None]


def pytest_runtest_setup(item) -> None:
    _running[0] = item


def require_real():
    """Skip a real-data test when ../shared is absent, or fail it when FEATCACHE_REQUIRE_REAL is set."""
    item = _running[0]
    if item is not None and item.get_closest_marker("real") is None:
        pytest.fail(f"{item.nodeid} uses the real data but lacks @pytest.mark.real")
    if REAL_DATA.is_dir() and REAL_WEIGHTS.is_file():
        return
    missing = REAL_DATA if not REAL_DATA.is_dir() else REAL_WEIGHTS
    message = f"real data or weights not found: {missing} (FEATCACHE_DATA / FEATCACHE_WEIGHTS)"
    if REQUIRE_REAL:
        pytest.fail(f"{message}, and FEATCACHE_REQUIRE_REAL is set")
    pytest.skip(message)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    """The clothing dataset extracted once per test run with the real weights at 150 px."""
    require_real()
    from featcache.api import extract

    out = tmp_path_factory.mktemp("real") / "clothing.h5"
    extract(REAL_DATA, out, weights=str(REAL_WEIGHTS), image_size=150)
    return out


def write_head(directory: Path, cache_path: Path, epochs: int = 40, seed: int = 0) -> Path:
    """A head folder in the train-head layout (head.keras + head.json), fitted briefly on the train rows."""
    import json

    import keras

    from featcache import store

    cache = store.read_cache(cache_path)
    train = cache.split_indices("train")
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((cache.features.shape[1],), name="features")
    model = keras.Model(inputs, keras.layers.Dense(len(cache.class_names), name="logits")(inputs))
    model.compile(keras.optimizers.Adam(0.01), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(cache.features[train], np.asarray(cache.rows.label)[train], epochs=epochs, batch_size=64, verbose=0)
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / "head.keras")
    attrs = cache.attrs
    meta = {
        "format": "featcache-head",
        "format_version": 1,
        "cache_fingerprint": attrs["fingerprint"],
        "cache_path": str(Path(cache_path).resolve()),
        "class_names": cache.class_names,
        "feature_dim": int(cache.features.shape[1]),
        "preprocessing": json.loads(attrs["preprocessing"]),
        "weights": attrs["weights"],
        "weights_id": attrs["weights_id"],
        "image_size": attrs["image_size"],
        "options": {"epochs": epochs, "seed": seed},
        "best_epoch": epochs,
        "metrics": {},
    }
    (directory / "head.json").write_text(json.dumps(meta, indent=2))
    return directory


@pytest.fixture(scope="session")
def tiny_xception_cache(tmp_path_factory) -> Path:
    """A few synthetic images extracted with the real Xception graph, seeded random weights, at 71 px."""
    from featcache.api import extract

    root = tmp_path_factory.mktemp("tiny_xception")
    data = make_split_dataset(root / "data", counts={"train": 4, "validation": 2, "test": 1})
    out = root / "cache.h5"
    extract(data, out, weights="none", image_size=71, batch_size=8)
    return out


def with_vectors_of(cache: Path, other: Path, out: Path) -> Path:
    """A copy of ``cache`` whose vectors are those ``other`` holds for the same files (tests may use h5py)."""
    import shutil

    import h5py

    shutil.copy(cache, out)
    with h5py.File(other, "r") as src, h5py.File(out, "r+") as h5:
        where = {sha: i for i, sha in enumerate(src["sha256"].asstr()[:])}
        rows = [where[sha] for sha in h5["sha256"].asstr()[:]]
        h5["features"][...] = src["features"][:][rows]
    return out
