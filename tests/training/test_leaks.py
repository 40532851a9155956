"""featcache leaks: exact and near duplicates across splits are found, untouched images never pair up."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw, ImageOps

from benchmarks.leaks import same_background_pairs
from featcache.api import compare, extract, leaks, sweep, train_head
from featcache.cli import main
from featcache.config import LeaksConfig
from featcache.training.leaks import Features, verify
from featcache.training.splits import load_splits
from tests.support import REAL_DATA, REAL_WEIGHTS, FakeBackbone, require_real


def _scene(path: Path, seed: int, colour) -> Path:
    """A photo-like synthetic image: shapes of random sizes and shades on a gradient, under a grain of its own
    (smooth noise), which gives it keypoints of its own as a photo's texture does."""
    rng = np.random.default_rng(seed)
    w, h = 240, 200
    base = np.linspace(0, 1, w)[None, :, None] * rng.integers(40, 120, 3) + np.array(colour) * 0.5
    im = Image.fromarray(np.clip(np.repeat(base, h, axis=0), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(8):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        box = (x0, y0, x0 + rng.integers(20, 120), y0 + rng.integers(20, 100))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    grain = Image.fromarray(rng.integers(0, 256, (h // 4, w // 4), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    pixels = np.asarray(im, dtype=np.float32) + (np.asarray(grain, dtype=np.float32)[:, :, None] - 128) * 0.4
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path, quality=92)
    return path


def _altered(source: Path, target: Path, how: str, rng) -> Path:
    """A copy of ``source`` re-encoded at JPEG 50-95, resized 0.5x-2x or cropped by at most 3%."""
    im = Image.open(source).convert("RGB")
    w, h = im.size
    if how == "resize":
        f = rng.choice([0.5, 0.75, 1.5, 2.0])
        im = im.resize((int(w * f), int(h * f)))
    elif how == "crop":
        c = rng.uniform(0.01, 0.03)
        left, top = rng.uniform(0, c), rng.uniform(0, c)
        im = im.crop((int(w * left), int(h * top), int(w * (1 - c + left)), int(h * (1 - c + top))))
    target.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    im.save(buffer, "JPEG", quality=int(rng.integers(50, 96)) if how == "jpeg" else 92)
    target.write_bytes(buffer.getvalue())
    return target


def _planted(root: Path, originals: list[Path], others: dict[str, list[Path]], labels) -> set[tuple[str, str]]:
    """A dataset: ``originals`` and others in train, untouched others and altered copies of originals in
    validation and test; returns the planted (train path, copy path) pairs."""
    rng, planted = np.random.default_rng(0), set()
    for i, src in enumerate(originals):
        label = labels(src)
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / "train" / label / src.name)
        if i % 2 == 0:
            split, how = ("validation", "test")[i // 2 % 2], ("jpeg", "resize", "crop")[i // 4 % 3]
            copy = _altered(src, root / split / label / f"copy_{src.stem}.jpg", how, rng)
            planted.add((f"train/{label}/{src.name}", str(copy.relative_to(root))))
    for split, files in others.items():
        for src in files:
            target = root / split / labels(src) / src.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, target)
    return planted


def _grain(seed: int, size: tuple[int, int], cell: int) -> np.ndarray:
    """Smooth colour noise of ``size`` (w, h) with blobs of about ``cell`` pixels: float32 (h, w, 3)."""
    w, h = size
    small = np.random.default_rng(seed).integers(0, 256, (h // cell, w // cell, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small, "RGB").resize((w, h), Image.BICUBIC), dtype=np.float32)


def _garment_on_blanket(path: Path, garment: int) -> Path:
    """A photo of garment number ``garment``, a pattern of its own, laid on the same blanket as every other."""
    pixels = 120 + (_grain(0, (300, 400), 8) - 128)
    pixels[60:340, 50:250] = _grain(garment, (200, 280), 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(path, quality=92)
    return path


def _confirmed(a: Path, b: Path) -> tuple[bool, int, bool]:
    """(a near duplicate under the default settings, inliers, mirrored)."""
    config, (inliers, share, mirrored) = LeaksConfig(), verify(Features.of(a), Features.of(b))
    return inliers >= config.min_inliers and share >= config.min_inlier_share, inliers, mirrored


def test_a_copy_is_confirmed_and_another_garment_on_the_same_background_is_not(tmp_path):
    photo = _garment_on_blanket(tmp_path / "a.jpg", 1)
    im = Image.open(photo)
    w, h = im.size
    copies = {
        "crop": im.crop((6, 8, w - 10, h - 6)),
        "half size": im.resize((w // 2, h // 2)),
        "twice the size": im.resize((w * 2, h * 2)),
        "mirror": ImageOps.mirror(im),
        "mirror + crop": ImageOps.mirror(im).crop((0, 10, w - 8, h)),
    }
    for name, copy in copies.items():
        copy.save(tmp_path / "copy.jpg", quality=60)
        accepted, _, mirrored = _confirmed(photo, tmp_path / "copy.jpg")
        assert accepted and mirrored == name.startswith("mirror"), name
    for garment in (2, 3):
        accepted, inliers, _ = _confirmed(photo, _garment_on_blanket(tmp_path / f"{garment}.jpg", garment))
        # the blanket alone agrees on enough keypoints to pass a count; their share is what tells them apart
        assert not accepted and inliers >= LeaksConfig().min_inliers


def test_a_share_above_one_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["leaks", str(tmp_path / "c.h5"), "--min-inlier-share", "1.5"])
    assert result.exit_code != 0 and "min_inlier_share must be a number in [0, 1)" in result.output
    assert "Traceback" not in result.output


def _found(result) -> set[tuple[str, str]]:
    return {(p.path_a, p.path_b) for p in result.pairs if p.kind == "near"}


@pytest.mark.slow
def test_planted_copies_are_found_and_untouched_images_never_pair(tmp_path, monkeypatch):
    scenes = tmp_path / "scenes"
    colours = {"cat": (200, 60, 60), "dog": (60, 200, 60)}
    made = [_scene(scenes / f"{label}_{i:02d}.jpg", 100 * j + i, colours[label])
            for j, label in enumerate(colours) for i in range(20)]  # fmt: skip
    originals = made[0:12] + made[20:32]
    others = {
        "train": made[12:16] + made[32:36],
        "validation": made[16:18] + made[36:38],
        "test": made[18:20] + made[38:40],
    }
    data = tmp_path / "data"
    planted = _planted(data, originals, others, lambda p: p.name.split("_")[0])
    shutil.copy(made[0], data / "test" / "cat" / "exact.jpg")  # an exact duplicate of a train image
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone())
    result = leaks(cache, tmp_path / "leaks", candidate_cosine=-1.0)  # every nearest neighbour is a candidate
    # the exact copy in test is also a near copy of the altered copy of the same image in validation
    assert _found(result) == planted | {("validation/cat/copy_cat_00.jpg", "test/cat/exact.jpg")}
    exact = [p for p in result.pairs if p.kind == "exact"]
    assert [(p.path_a, p.path_b) for p in exact] == [("train/cat/cat_00.jpg", "test/cat/exact.jpg")]
    document = json.loads((tmp_path / "leaks" / "leaks.json").read_text())
    assert sum(sum(k.values()) for k in document["counts"].values()) == len(planted) + 2
    assert len(list(csv.DictReader(open(tmp_path / "leaks" / "leaks.csv")))) == len(planted) + 2
    dropped = train_head(cache, tmp_path / "head", epochs=1, drop_leaks=True)
    assert dropped.metadata["metrics"]["leaks_dropped"] == len(planted) + 1
    report = compare(cache, tmp_path / "cmp", epochs=1, drop_leaks=True).report
    assert report["leaks_dropped"] == len(planted) + 1
    assert report["rows"]["validation"] == 4 and report["rows"]["test"] == 4  # the untouched ones
    for split, scores in report["with_leaks"]["keras_head"].items():  # against the saved head on every row
        assert scores["accuracy"] == pytest.approx(_head_accuracy(tmp_path / "cmp" / "head", cache, split))
    assert (
        "with the 13 leaking rows in"
        in CliRunner()
        .invoke(main, ["compare", str(cache), "-o", str(tmp_path / "cmp2"), "--epochs", "1", "--drop-leaks"])
        .output
    )
    # sweep workers take the rows the parent found instead of searching again, and leave out the same ones
    grid = {"lr": (0.01,), "inner": (0,), "dropout": (0.0,), "seeds": 2, "epochs": 2, "drop_leaks": True}
    one, two = sweep(cache, tmp_path / "s1", jobs=1, **grid), sweep(cache, tmp_path / "s2", jobs=2, **grid)
    for a, b in zip(one.runs, two.runs):
        assert a["seed"] == b["seed"] and a["history"]["val_loss"] == pytest.approx(b["history"]["val_loss"], rel=1e-5)
    found = load_splits(cache, drop_leaks=True)
    monkeypatch.setattr("featcache.training.leaks.find_leaks", lambda *a, **k: pytest.fail("searched again"))
    given = load_splits(cache, drop_leaks=True, leaking=found.leaking_rows)
    assert len(found.leaking_rows) == len(planted) + 1 and given.dropped == found.dropped
    assert np.array_equal(given.validation.rows, found.validation.rows)
    assert np.array_equal(given.test.rows, found.test.rows)


def _head_accuracy(head: Path, cache: Path, split: str) -> float:
    """The saved .keras head's accuracy on every row of ``split``, read with plain h5py."""
    import h5py
    import keras

    with h5py.File(cache, "r") as h5:
        rows = np.flatnonzero(h5["split"][:].astype(str) == split)
        x, y = h5["features"][:][rows], h5["label"][:][rows]
    model = keras.saving.load_model(head / "head.keras", safe_mode=True)
    return float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))


def test_the_same_content_under_two_classes_is_reported(tmp_path):
    data = tmp_path / "data"
    _scene(data / "train" / "cat" / "a.jpg", 1, (200, 60, 60))
    _scene(data / "train" / "dog" / "b.jpg", 2, (60, 200, 60))
    shutil.copy(data / "train" / "cat" / "a.jpg", data / "train" / "dog" / "a_again.jpg")
    cache = tmp_path / "c.h5"
    extract(data, cache, backbone=FakeBackbone())
    result = CliRunner().invoke(main, ["leaks", str(cache), "-o", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert "label: train/cat/a.jpg <-> train/dog/a_again.jpg" in result.output


@pytest.mark.real
def test_on_real_photos_planted_copies_are_found_with_no_false_pair(tmp_path):
    """Altered copies of real photos are found; distinct garments photographed on one blanket, floor or wall,
    placed in train and validation, are not, nor any other pair."""
    require_real()
    photos = {c: sorted((REAL_DATA / "train" / c).glob("*.jpg"))[:14] for c in ("pants", "t-shirt", "shoes")}
    originals = [p for files in photos.values() for p in files[:10]]
    others = {"train": [], "validation": [], "test": []}
    for files in photos.values():
        others["train"] += files[10:12]
        others["validation"].append(files[12])
        others["test"].append(files[13])
    for c in ("pants", "t-shirt", "shoes"):  # distinct photos of the same garments, from the real splits
        others["validation"] += sorted((REAL_DATA / "validation" / c).glob("*.jpg"))[:4]
        others["test"] += sorted((REAL_DATA / "test" / c).glob("*.jpg"))[:4]
    used = {p for files in photos.values() for p in files}
    for a, b in _same_background():
        accepted, _, _ = _confirmed(a, b)
        assert not accepted, (a, b)
        if a not in used and b not in used:  # each photo in one split only
            used |= {a, b}
            others["train"].append(a)
            others["validation"].append(b)
    data = tmp_path / "data"
    planted = _planted(data, originals, others, lambda p: p.parent.name)
    cache = tmp_path / "c.h5"
    extract(data, cache, weights=str(REAL_WEIGHTS))
    result = leaks(cache, tmp_path / "leaks")
    assert _found(result) == planted, (sorted(planted - _found(result)), sorted(_found(result) - planted))


def _same_background() -> list[tuple[Path, Path]]:
    """Pairs of distinct garments of one class on the same background: the train photos whose borders match
    most closely, and pairs of the kinds whose keypoints agree the most under one transform (one red blanket,
    a patterned carpet, a wooden floor, a wall with a hook)."""
    closest = same_background_pairs(REAL_DATA, ("train",), ("t-shirt", "shoes", "shirt", "longsleeve", "pants"), 3)
    named = [
        ("t-shirt", "2cbc567c-79b1-4c37-8f31-6a452650bb80", "496cd909-30b6-4b85-890e-af9615a54cec"),
        ("shoes", "00f6e504-7c27-438e-a5d7-bc65e557bb2b", "5fea042c-f2ac-4523-a813-fc0eae2d9472"),
        ("skirt", "25450d12-43a6-48c1-b5c0-fd613ad61ee0", "def00273-79ed-414b-b7d3-d742001a2d15"),
        ("longsleeve", "85e4371c-c488-4ab3-8473-cd95c5ba5829", "8a3b06d4-6722-490e-85c9-de0eb834883d"),
    ]
    return closest + [(REAL_DATA / "train" / c / f"{a}.jpg", REAL_DATA / "train" / c / f"{b}.jpg") for c, a, b in named]
