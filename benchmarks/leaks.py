"""How well ``featcache leaks`` finds altered copies across splits, and how long its search takes at scale.

    python -m benchmarks.leaks --data DATA_DIR --weights FILE [--originals 40] [--rows 100000]

1. Recall and precision on real photos: ``--originals`` train photos of DATA (spread over its classes)
   go to train; for each one, one altered copy per alteration (JPEG quality 50-95, resize 0.5x-2x,
   crop <= 3%, crop 5-10%, mirror, mirror + crop <= 3%) goes to validation or test, in a dataset of
   its own per alteration, beside untouched validation and test photos of DATA. Each dataset is
   extracted with the real weights and checked with the default settings. Recall: planted pairs
   found / planted; false pairs: pairs found that were not planted (``--originals`` x 2 untouched
   photos could pair falsely).
2. Time of the check on a synthetic cache of ``--rows`` rows (2048-d: a centre per class plus noise,
   80% train, 10% validation, 10% test by content hash) written through the cache module
   (:mod:`benchmarks.scale`): the nearest-neighbour search over every validation and test row (no
   image is decoded: these vectors make no candidates).
Everything is written in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from pathlib import Path

import click
import numpy as np
from PIL import Image, ImageOps

ALTERATIONS = ("jpeg", "resize", "crop3", "crop5-10", "mirror", "mirror+crop3")


def alter(image: Image.Image, how: str, rng) -> Image.Image:
    w, h = image.size
    if how == "jpeg":
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=int(rng.integers(50, 96)))
        return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    if how == "resize":
        f = float(rng.choice([0.5, 0.75, 1.5, 2.0]))
        return image.resize((int(w * f), int(h * f)))
    if how.startswith("mirror"):
        image = ImageOps.mirror(image)
        return alter(image, "crop3", rng) if how.endswith("crop3") else image
    c = rng.uniform(0.01, 0.03) if how == "crop3" else rng.uniform(0.05, 0.10)
    left, top = rng.uniform(0, c), rng.uniform(0, c)
    return image.crop((int(w * left), int(h * top), int(w * (1 - c + left)), int(h * (1 - c + top))))


def planted_dataset(data: Path, root: Path, how: str, originals: int, seed: int = 0) -> set[tuple[str, str]]:
    """train: the originals; validation/test: one altered copy of each, and as many untouched photos."""
    rng = np.random.default_rng(seed)
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    per_class = -(-originals // len(classes))
    planted = set()
    for c in classes:
        for i, src in enumerate(sorted((data / "train" / c).glob("*.jpg"))[:per_class]):
            (root / "train" / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / "train" / c / src.name)
            split = ("validation", "test")[i % 2]
            (root / split / c).mkdir(parents=True, exist_ok=True)
            copy = root / split / c / f"copy_{src.stem}.jpg"
            alter(Image.open(src).convert("RGB"), how, rng).save(copy, "JPEG", quality=92)
            planted.add((f"train/{c}/{src.name}", f"{split}/{c}/{copy.name}"))
        for split in ("validation", "test"):
            for src in sorted((data / split / c).glob("*.jpg"))[:per_class]:
                shutil.copy(src, root / split / c / src.name)
    return planted


def recall_and_false_pairs(data: Path, weights: str, work: Path, how: str, originals: int):
    from featcache.api import extract, leaks

    root = work / how
    planted = planted_dataset(data, root / "data", how, originals)
    extract(root / "data", root / "c.h5", weights=weights)
    result = leaks(root / "c.h5", root / "leaks")
    found = {(p.path_a, p.path_b) for p in result.pairs if p.kind in ("near", "exact")}
    return len(planted & found), len(planted), len(found - planted), result.seconds


def search_seconds(rows: int, work: Path) -> tuple[float, int]:
    """``featcache leaks`` on a synthetic cache of ``rows`` random rows: its seconds and candidates."""
    from benchmarks.scale import cache_attrs, synthetic_rows, write_vectors
    from featcache.api import leaks

    cache = work / "synthetic" / "features.h5"
    write_vectors(cache, synthetic_rows(rows), cache_attrs(work / "absent", "split-folders"))
    start = time.perf_counter()
    result = leaks(cache, work / "synthetic-leaks")
    return time.perf_counter() - start, result.candidates


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--weights", required=True, help="Xception no-top weights file.")
@click.option("--originals", type=int, default=40, show_default=True)
@click.option("--rows", type=int, default=100_000, show_default=True)
def main(data, weights, originals, rows):
    """Recall and false pairs per alteration on real photos; seconds of the check on a synthetic cache."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="featcache-leaks-bench-") as tmp:
        work = Path(tmp)
        for how in ALTERATIONS:
            hit, planted, false, seconds = recall_and_false_pairs(data, weights, work, how, originals)
            lines.append(f"{how:>13}: found {hit} of {planted} planted copies (recall {hit / planted:.2f}), "
                         f"{false} false pair(s); check {seconds:.1f} s")  # fmt: skip
        seconds, candidates = search_seconds(rows, work)
        lines.append(f"synthetic cache of {rows} rows (2048-d): featcache leaks took {seconds:.1f} s in-process "
                     f"({candidates} candidates)")  # fmt: skip
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
