"""How well ``featcache leaks`` finds altered copies across splits, how often it pairs distinct garments
photographed on one background, and how long its confirmation and its search take.

    python -m benchmarks.leaks --data DATA_DIR --weights FILE [--originals 40] [--negatives 200] [--rows 100000]

1. Recall and precision on real photos: ``--originals`` train photos of DATA (spread over its classes)
   go to train; for each one, one altered copy per alteration (JPEG quality 50-95, resize 0.5x-2x,
   crop <= 3%, crop 5-10%, mirror, mirror + crop <= 3%) goes to validation or test, in a dataset of
   its own per alteration, beside untouched validation and test photos of DATA. Each dataset is
   extracted with the real weights and checked with the default settings. Recall: planted pairs
   found / planted; false pairs: pairs found that were not planted (``--originals`` x 2 untouched
   photos could pair falsely).
2. False pairs among distinct garments on one background: the ``--negatives`` pairs of photos of one
   class of DATA's validation and test splits (not the train split the thresholds were chosen on) whose
   borders match most closely (:func:`same_background_pairs`), each checked by the confirmation alone,
   whatever its cosine. Of those whose photos are in no earlier pair, the first photo goes to train and
   the second to validation, in a dataset that is extracted and checked as in 1: every pair found is
   false. The confirmation of every pair of 1 and 2 is timed (decoding and local features of both
   images, then the matching and the fit).
3. Time of the check on a synthetic cache of ``--rows`` rows (2048-d: a centre per class plus noise,
   80% train, 10% validation, 10% test by content hash) written through the cache module
   (:mod:`benchmarks.scale`): the nearest-neighbour search over every validation and test row (no
   image is decoded: these vectors make no candidates).
Everything is written in a temporary folder, deleted at the end.
"""

from __future__ import annotations

import io
import shutil
import statistics
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


def border_statistics(path: Path) -> np.ndarray:
    """Mean and spread of each colour channel along each of the four borders (1/16 of the side), at 64x64."""
    with Image.open(path) as im:
        x = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((64, 64)), dtype=np.float32)
    strips = [x[:4], x[-4:], x[:, :4], x[:, -4:]]
    return np.concatenate([np.r_[s.reshape(-1, 3).mean(0), s.reshape(-1, 3).std(0)] for s in strips])


def same_background_pairs(data: Path, splits: tuple[str, ...], classes, per_class: int) -> list[tuple[Path, Path]]:
    """The ``per_class`` pairs of photos of each class (of ``splits`` of DATA) whose border statistics are the
    closest: distinct garments photographed on the same blanket, floor or wall. A photo may be in several."""
    pairs = []
    for c in classes:
        files = sorted(f for split in splits for f in (data / split / c).glob("*.jpg"))
        stats = np.stack([border_statistics(f) for f in files])
        i, j = np.triu_indices(len(files), 1)
        closest = np.argsort(np.linalg.norm(stats[i] - stats[j], axis=1), kind="stable")[:per_class]
        pairs += [(files[i[k]], files[j[k]]) for k in closest]
    return pairs


def negatives_dataset(pairs: list[tuple[Path, Path]], root: Path) -> set[tuple[str, str]]:
    """train: the first photo of each pair, validation: the second, for the pairs none of whose photos is in
    an earlier pair (a photo goes to one split); returns those pairs as dataset paths."""
    out, used = set(), set()
    for a, b in pairs:
        if a in used or b in used:
            continue
        used |= {a, b}
        c = a.parent.name
        for split, src in (("train", a), ("validation", b)):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / split / c / src.name)
        out.add((f"train/{c}/{a.name}", f"validation/{c}/{b.name}"))
    return out


def checked(root: Path, weights: str) -> set[tuple[str, str]]:
    """The near and exact pairs ``featcache leaks`` finds in the dataset ``root/data``, with the real weights."""
    from featcache.api import extract, leaks

    extract(root / "data", root / "c.h5", weights=weights)
    result = leaks(root / "c.h5", root / "leaks")
    return {(p.path_a, p.path_b) for p in result.pairs if p.kind in ("near", "exact")}


def confirmed(root: Path, pairs) -> tuple[int, list[float]]:
    """How many of ``pairs`` (paths, under ``root`` when relative) the confirmation accepts, whatever their
    cosine, and the seconds each took: both images decoded and their features taken, then matched and fitted."""
    from featcache.config import LeaksConfig
    from featcache.training.leaks import Features, verify

    config, accepted, seconds = LeaksConfig(), 0, []
    for a, b in sorted(pairs):
        start = time.perf_counter()
        inliers, share, _ = verify(Features.of(root / a), Features.of(root / b))
        seconds.append(time.perf_counter() - start)
        accepted += inliers >= config.min_inliers and share >= config.min_inlier_share
    return accepted, seconds


def search_seconds(rows: int, work: Path) -> tuple[float, int]:
    """``featcache leaks`` on a synthetic cache of ``rows`` random rows: its seconds and candidates."""
    from benchmarks.scale import cache_attrs, synthetic_rows, write_vectors
    from featcache.api import leaks

    cache = work / "synthetic" / "features.h5"
    write_vectors(cache, synthetic_rows(rows), cache_attrs(work / "absent", "split-folders"))
    start = time.perf_counter()
    result = leaks(cache, work / "synthetic-leaks")
    return time.perf_counter() - start, result.candidates


def _line(name: str, planted: int, found: set, truth: set, accepted: int) -> str:
    hit, false = len(truth & found), len(found - truth)
    recall = f"{hit} of {planted} (recall {hit / planted:.2f})" if planted else "-"
    precision = f"{hit / (hit + false):.2f}" if hit + false else "-"
    return (f"| {name} | {recall} | {false} | {precision} | {accepted} of {len(truth)} |")  # fmt: skip


@click.command()
@click.option("--data", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True)
@click.option("--weights", required=True, help="Xception no-top weights file.")
@click.option("--originals", type=int, default=40, show_default=True)
@click.option(
    "--negatives", type=int, default=200, show_default=True, help="Same-background pairs, spread over the classes."
)
@click.option("--rows", type=int, default=100_000, show_default=True)
def main(data, weights, originals, negatives, rows):
    """Recall and precision per alteration and on same-background pairs; seconds of the confirmation per pair
    and of the check on a synthetic cache."""
    from featcache.versions import cpu_name

    lines = ["| pairs | planted copies found | false pairs | precision | accepted by the confirmation alone |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    seconds = []
    with tempfile.TemporaryDirectory(prefix="featcache-leaks-bench-") as tmp:
        work = Path(tmp)
        for how in ALTERATIONS:
            planted = planted_dataset(data, work / how / "data", how, originals)
            accepted, took = confirmed(work / how / "data", planted)
            lines.append(_line(how, len(planted), checked(work / how, weights), planted, accepted))
            seconds += took
        classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
        pairs = same_background_pairs(data, ("validation", "test"), classes, -(-negatives // len(classes)))
        accepted, took = confirmed(data, pairs)
        truth = negatives_dataset(pairs, work / "negatives" / "data")
        found = checked(work / "negatives", weights)
        lines.append(f"| same background, distinct garments | - | {len(found)} among {len(truth)} placed | - | "
                     f"{accepted} of {len(pairs)} (false) |")  # fmt: skip
        seconds += took
        q = statistics.quantiles(seconds, n=20)
        lines.append(f"confirmation of one pair (both images decoded, SIFT, matched, RANSAC fit), in-process: median "
                     f"{statistics.median(seconds) * 1000:.0f} ms, 5-95% {q[0] * 1000:.0f}-{q[-1] * 1000:.0f} ms "
                     f"over {len(seconds)} pairs")  # fmt: skip
        search, candidates = search_seconds(rows, work)
        lines.append(f"synthetic cache of {rows} rows (2048-d): featcache leaks took {search:.1f} s in-process "
                     f"({candidates} candidates)")  # fmt: skip
    lines.append(f"CPU: {cpu_name()}")
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
