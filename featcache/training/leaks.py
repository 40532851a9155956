"""``featcache leaks``: images shared between splits, exactly or nearly, which inflate every score.

Exact duplicates are rows with the same content hash in two splits (or in two classes). Near
duplicates combine two signals, since no single cosine threshold on pooled vectors separates
altered copies (crops, mirrors) from distinct photos of one class:

1. candidates: for every validation and test row, its ``NEIGHBOURS`` nearest rows of the earlier
   splits (train for both, validation for test) by cosine of the L2-normalised vectors, with a
   cosine of at least ``candidate_cosine``: a blocked matrix product, the earlier split's vectors
   streamed from the cache a chunk at a time;
2. confirmation: both images are decoded from the data folder and their SIFT keypoints matched (OpenCV,
   Lowe's ratio test), the first image's also mirrored; a similarity transform is fitted to the matches
   with RANSAC (:func:`verify`). A pair leaks when at least ``min_inliers`` keypoints, and at least
   ``min_inlier_share`` of the keypoints of the image that has more, agree with it. Crops, mirrors,
   re-encodes and resizes keep most keypoints in place; distinct garments photographed on one
   background match only the background's keypoints, a small share, though they reach cosines of 0.9.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from featcache.cache.layout import SPLITS, read_rows
from featcache.cache.reader import FeatureReader, read_row_index, read_sha256
from featcache.config import LeaksConfig
from featcache.errors import ConfigError
from featcache.progress import progress_bar
from featcache.training import stream

NEIGHBOURS = 5
QUERY_BLOCK = 4096
SPLIT_PAIRS = (("train", "validation"), ("train", "test"), ("validation", "test"))
LEAKS_JSON, LEAKS_CSV = "leaks.json", "leaks.csv"


@dataclass
class Pair:
    """Two rows of different splits (``a`` the earlier one) holding the same or nearly the same image."""

    kind: str  # exact | near | label (the same content under two classes)
    split_a: str
    row_a: int
    path_a: str
    split_b: str
    row_b: int
    path_b: str
    cosine: float | None = None
    inliers: int | None = None  # keypoints that one transform carries onto their matches (near pairs)
    inlier_share: float | None = None  # of the keypoints of the image that has more
    mirrored: bool = False


@dataclass
class LeaksResult:
    cache: Path
    pairs: list[Pair]
    candidates: int
    seconds: float
    files: list[Path] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Pairs per split pair and kind."""
        found: dict[str, dict[str, int]] = {}
        for p in self.pairs:
            key = f"{p.split_a}-{p.split_b}"
            found.setdefault(key, {}).setdefault(p.kind, 0)
            found[key][p.kind] += 1
        return found

    def leaking_rows(self) -> np.ndarray:
        """Validation and test rows that leak from an earlier split (their ``b`` side): int64, sorted."""
        rows = {p.row_b for p in self.pairs if p.kind in ("exact", "near") and p.split_b != p.split_a}
        return np.array(sorted(rows), dtype=np.int64)

    def summary(self) -> str:
        lines = [f"{self.cache}: {len(self.pairs)} leaking pair(s), {self.candidates} near candidate(s) checked, "
                 f"{self.seconds:.1f} s"]  # fmt: skip
        for key, kinds in sorted(self.counts().items()):
            lines.append(f"  {key:<20} " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for p in self.pairs[:10]:
            score = (
                f" (cosine {p.cosine:.3f}, {p.inliers} inliers, share {p.inlier_share:.2f})" if p.kind == "near" else ""
            )
            lines.append(f"  {p.kind}: {p.path_a} <-> {p.path_b}{score}")
        if self.unreadable:
            lines.append(f"  {len(self.unreadable)} candidate image(s) could not be read, first {self.unreadable[0]}")
        if self.files:
            lines.append(f"report: {self.files[0]} (and {', '.join(f.name for f in self.files[1:])})")
        return "\n".join(lines)


def find_leaks(cache: str | Path, config: LeaksConfig | None = None, progress: bool = False) -> LeaksResult:
    """Exact and near duplicates across the splits of ``cache``."""
    config, start, path = config or LeaksConfig(), time.perf_counter(), Path(cache)
    index = read_row_index(path)
    hashes = np.array(read_sha256(path, np.arange(len(index), dtype=np.int64)), dtype=object)
    splits = {name: index.split_indices(name) for name in SPLITS}
    pairs = exact_pairs(hashes, index.split, index.label)
    candidates = near_candidates(path, splits, hashes, config, progress)
    near, unreadable = confirm(path, candidates, config, index.attrs, _split_names(index.split))
    pairs = _with_paths(path, pairs + near)
    return LeaksResult(path, pairs, len(candidates), time.perf_counter() - start, unreadable=unreadable)


def exact_pairs(hashes: np.ndarray, split: np.ndarray, label: np.ndarray) -> list[Pair]:
    """Rows sharing a content hash: one pair per first row of an earlier split and each later row, and
    one per two classes that hold the same content."""
    order = np.argsort(hashes.astype(str), kind="stable")
    sorted_h = hashes[order]
    starts = np.flatnonzero(np.r_[True, sorted_h[1:] != sorted_h[:-1]])
    ends = np.r_[starts[1:], len(order)]
    pairs = []
    for lo, hi in zip(starts.tolist(), ends.tolist()):
        if hi - lo < 2:
            continue
        rows = order[lo:hi]
        pairs += _group_pairs(rows[np.lexsort((rows, split[rows]))], split, label)
    return pairs


def _group_pairs(rows: np.ndarray, split: np.ndarray, label: np.ndarray) -> list[Pair]:
    pairs, first = [], int(rows[0])
    for r in rows[1:].tolist():
        if split[r] != split[first] and split[first] >= 0 and split[r] >= 0:
            pairs.append(Pair("exact", SPLITS[split[first]], first, "", SPLITS[split[r]], r, ""))
        if label[r] != label[first]:
            name = SPLITS[split[r]] if split[r] >= 0 else "other"
            pairs.append(Pair("label", SPLITS[split[first]] if split[first] >= 0 else "other", first, "", name, r, ""))
    return pairs


def near_candidates(path: Path, splits: dict, hashes: np.ndarray, config: LeaksConfig, progress: bool):
    """(row of the earlier split, later row, cosine) for each of the NEIGHBOURS nearest rows of an earlier split
    above ``candidate_cosine``, not counting rows of the same content."""
    found = []
    with FeatureReader(path) as reader:
        for a, b in SPLIT_PAIRS:
            if len(splits[a]) and len(splits[b]):
                found += _nearest(reader, splits[a], splits[b], hashes, config.candidate_cosine, progress)
    return found


def _nearest(reader: FeatureReader, refs: np.ndarray, queries: np.ndarray, hashes, threshold: float, progress):
    """The blocked search: queries held (normalised), reference rows read a chunk at a time."""
    q = _normalised(reader.gather([queries], stream.CHUNK_ROWS)[0])
    k = min(NEIGHBOURS, len(refs))
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_r = np.full((len(queries), k), -1, dtype=np.int64)
    chunks = range(0, len(refs), stream.CHUNK_ROWS)
    with progress_bar(len(chunks), progress, "leaks") as bar:
        for start in chunks:
            rows = refs[start : start + stream.CHUNK_ROWS]
            x = _normalised(reader.gather([rows], stream.CHUNK_ROWS)[0])
            for lo in range(0, len(queries), QUERY_BLOCK):
                sims = q[lo : lo + QUERY_BLOCK] @ x.T
                _keep_top(best_s[lo : lo + QUERY_BLOCK], best_r[lo : lo + QUERY_BLOCK], sims, rows, k)
            bar.update(1)
    out = []
    for i, j in zip(*np.nonzero(best_s >= threshold)):
        r, qrow = int(best_r[i, j]), int(queries[i])
        if hashes[r] != hashes[qrow]:
            out.append((r, qrow, float(best_s[i, j])))
    return out


def _normalised(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _keep_top(best_s: np.ndarray, best_r: np.ndarray, sims: np.ndarray, rows: np.ndarray, k: int) -> None:
    """Merge the ``k`` highest of ``sims`` (queries x chunk rows) into the running best, in place."""
    take = min(k, sims.shape[1])
    top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
    s = np.concatenate([best_s, np.take_along_axis(sims, top, axis=1)], axis=1)
    r = np.concatenate([best_r, rows[top]], axis=1)
    keep = np.argsort(-s, axis=1, kind="stable")[:, :k]
    best_s[:] = np.take_along_axis(s, keep, axis=1)
    best_r[:] = np.take_along_axis(r, keep, axis=1)


def confirm(path: Path, candidates, config: LeaksConfig, attrs: dict, split_of) -> tuple[list[Pair], list[str]]:
    """The candidates whose local features agree on one geometric transform (see :func:`verify`); ``split_of``
    names each row's split."""
    if not candidates:
        return [], []
    root = Path(config.data_dir or attrs.get("data_dir", ""))
    rows = sorted({r for a, b, _ in candidates for r in (a, b)})
    paths = dict(zip(rows, read_rows(path, rows).path))
    features, unreadable = {}, []
    for r in rows:
        try:
            features[r] = Features.of(root / paths[r])
        except OSError as exc:
            unreadable.append(f"{paths[r]} ({exc})")
    if rows and len(unreadable) == len(rows):
        raise ConfigError(f"none of the images is readable under {root}; pass --data-dir with the data folder")
    pairs = []
    for a, b, cosine in candidates:
        if a in features and b in features:
            inliers, share, mirrored = verify(features[a], features[b])
            if inliers >= config.min_inliers and share >= config.min_inlier_share:
                pairs.append(Pair("near", split_of[a], a, "", split_of[b], b, "", cosine, inliers, share, mirrored))
    return pairs, unreadable


#: longer side, in pixels, of the grayscale image whose local features are matched: copies resized to half
#: of the clothing photos' 533 px are then hardly enlarged
SIDE = 320
#: SIFT keypoints kept per image (the strongest)
MAX_FEATURES = 1000
#: SIFT's least contrast of a keypoint, half its default: plain garments and blurred photos still get a few
#: hundred keypoints, so that a copy of one agrees on many and a chance fit on its background stays a small share
CONTRAST = 0.02
#: Lowe's ratio test: a match is kept when its descriptor distance is below this share of the second best's
RATIO = 0.75
#: largest distance, in pixels at SIDE, of an inlier from where the fitted transform puts it
RANSAC_PIXELS = 3.0


@dataclass
class Features:
    """SIFT keypoints and descriptors of an image, and of its mirror image, at SIDE pixels on the longer side."""

    points: np.ndarray  # (n, 2) float32, x and y in pixels
    descriptors: np.ndarray  # (n, 128) uint8: OpenCV's SIFT values are whole numbers below 256; a quarter of float32
    mirrored_points: np.ndarray
    mirrored_descriptors: np.ndarray

    @classmethod
    def of(cls, path: Path) -> Features:
        import cv2
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            gray = ImageOps.exif_transpose(im).convert("L")
        scale = SIDE / max(gray.size)
        gray = gray.resize((max(round(gray.width * scale), 1), max(round(gray.height * scale), 1)), Image.BILINEAR)
        pixels = np.asarray(gray)
        sift = cv2.SIFT_create(nfeatures=MAX_FEATURES, contrastThreshold=CONTRAST)
        return cls(*_sift(sift, pixels), *_sift(sift, np.ascontiguousarray(pixels[:, ::-1])))


def _sift(sift, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keypoints, descriptors = sift.detectAndCompute(pixels, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return points, (descriptors if descriptors is not None else np.zeros((0, 128))).astype(np.uint8)


def verify(a: Features, b: Features) -> tuple[int, float, bool]:
    """(inliers, inlier share, mirrored): the most keypoints that one similarity transform (rotation, scale,
    shift; RANSAC) carries from ``a``, or from its mirror image, onto their ratio-test matches in ``b``, and
    their share of the keypoints of the image that has more. Altered copies keep most keypoints of both in
    place (share >= 0.35 on the clothing photos); distinct garments on one background match only some of the
    background's (share <= 0.18), however few keypoints one of them has."""
    direct = _inliers(a.points, a.descriptors, b.points, b.descriptors)
    mirrored = _inliers(a.mirrored_points, a.mirrored_descriptors, b.points, b.descriptors)
    inliers = max(direct, mirrored)
    more = max(len(a.points), len(b.points))
    return inliers, round(inliers / more, 4) if more else 0.0, mirrored > direct


def _inliers(points_a: np.ndarray, desc_a: np.ndarray, points_b: np.ndarray, desc_b: np.ndarray) -> int:
    import cv2

    if len(desc_a) < 2 or len(desc_b) < 2:
        return 0
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(desc_a.astype(np.float32), desc_b.astype(np.float32), k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < RATIO * m[1].distance]
    if len(good) < 3:  # a similarity transform needs two points, RANSAC a third to tell them apart
        return 0
    source = points_a[[m.queryIdx for m in good]]
    target = points_b[[m.trainIdx for m in good]]
    cv2.setRNGSeed(0)  # RANSAC's samples: the same pair gives the same answer whatever was fitted before
    transform, inliers = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=RANSAC_PIXELS
    )
    return 0 if transform is None else int(inliers.sum())


def _split_names(split: np.ndarray) -> np.ndarray:
    """Each row's split name, from the split codes of :func:`read_row_index` (-1: other)."""
    return np.array([*SPLITS, "other"], dtype=object)[split]


def _with_paths(path: Path, pairs: list[Pair]) -> list[Pair]:
    rows = sorted({r for p in pairs for r in (p.row_a, p.row_b)})
    paths = dict(zip(rows, read_rows(path, rows).path)) if rows else {}
    for p in pairs:
        p.path_a, p.path_b = paths[p.row_a], paths[p.row_b]
    return sorted(pairs, key=lambda p: (p.split_a, p.split_b, p.kind, -(p.cosine or 1.0), p.row_b))


def write_leaks(result: LeaksResult, out: Path) -> list[Path]:
    """``leaks.json`` (counts per split pair and kind, every pair) and ``leaks.csv`` (every pair)."""
    out.mkdir(parents=True, exist_ok=True)
    document = {
        "cache": str(result.cache),
        "counts": result.counts(),
        "candidates": result.candidates,
        "seconds": result.seconds,
        "pairs": [asdict(p) for p in result.pairs],
        "unreadable": result.unreadable,
    }
    (out / LEAKS_JSON).write_text(json.dumps(document, indent=1) + "\n")
    with open(out / LEAKS_CSV, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:  # names' bytes
        writer = csv.DictWriter(fh, fieldnames=list(Pair.__dataclass_fields__))
        writer.writeheader()
        writer.writerows(asdict(p) for p in result.pairs)
    result.files = [out / LEAKS_JSON, out / LEAKS_CSV]
    return result.files
