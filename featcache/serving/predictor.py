"""Classifying new images with a trained head, replaying exactly the preprocessing of its cache."""

from __future__ import annotations

import csv
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.config import PredictConfig
from featcache.errors import HeadError
from featcache.progress import batched, progress_bar
from featcache.serving.recipe import Recipe, collect_images, decode, live_backbone, require_match
from featcache.training.head_files import head_logits, load_head
from featcache.training.metrics import softmax

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    """One image: its ``top`` (class, probability) pairs best first, or the ``error`` that stopped it.

    ``logits`` is the head's float32 output of shape (n_classes,), None for an unreadable file.
    """

    path: Path
    top: list[tuple[str, float]]
    logits: np.ndarray | None = None
    error: str | None = None

    @property
    def label(self) -> str | None:
        return self.top[0][0] if self.top else None

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "predictions": [{"class": name, "probability": round(p, 6)} for name, p in self.top],
            "error": self.error,
        }


@dataclass
class PredictResult:
    """Every image asked for, in order (files as listed, folders sorted), and the time taken."""

    predictions: list[Prediction]
    class_names: list[str]
    seconds: float

    @property
    def failed(self) -> list[Prediction]:
        return [p for p in self.predictions if p.error]

    def text(self) -> str:
        """One line per image: its best classes with probabilities, or the error."""
        lines = []
        for p in self.predictions:
            shown = f"error: {p.error}" if p.error else ", ".join(f"{name} {prob:.3f}" for name, prob in p.top)
            lines.append(f"{p.path}: {shown}")
        return "\n".join(lines)

    def csv(self) -> str:
        """CSV rows path,rank,class,probability,error with a header."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["path", "rank", "class", "probability", "error"])
        for p in self.predictions:
            if p.error:
                writer.writerow([p.path, "", "", "", p.error])
            for rank, (name, prob) in enumerate(p.top, start=1):
                writer.writerow([p.path, rank, name, f"{prob:.6f}", ""])
        return buffer.getvalue()

    def status(self) -> str:
        """How many images were classified and how many could not be read."""
        n_bad = len(self.failed)
        return f"classified {len(self.predictions) - n_bad} image(s), {n_bad} could not be read; {self.seconds:.1f} s"


def predict(config: PredictConfig, backbone=None, progress: bool = False) -> PredictResult:
    """Classify ``config.images`` with the head in ``config.head``.

    ``backbone`` needs ``identity()`` and ``build() -> embed`` (uint8 (n, s, s, 3) -> float32
    (n, dim)); the default is the frozen Xception with the weights the head's cache was made
    with, and other weights are refused.
    """
    start = time.perf_counter()
    model, meta = load_head(config.head)
    recipe = Recipe.from_head(meta)
    live = live_backbone(recipe, config.weights, backbone)
    require_match(live, recipe, f"the head in {config.head}")
    entries = collect_images(config.images)
    files = [path for path, reason in entries if reason is None]
    results = {path: Prediction(path, [], error=reason) for path, reason in entries if reason}
    if files:
        embed = live.backbone.build()
        with progress_bar(len(files), progress, "predict") as bar, ThreadPoolExecutor(config.workers) as workers:
            for batch in batched(files, config.batch_size):
                for item in _classify(batch, workers, embed, model, recipe, config.top_k, int(meta["feature_dim"])):
                    results[item.path] = item
                bar.update(len(batch))
    return PredictResult([results[path] for path, _ in entries], list(recipe.class_names), time.perf_counter() - start)


def _classify(batch, workers, embed, model, recipe, top_k: int, dim: int) -> list[Prediction]:
    """Decode a batch on worker threads, embed the readable images, and apply the head."""
    decoded = list(workers.map(lambda p: decode(p, recipe.spec), batch))
    out = [Prediction(p, [], error=r) for p, r in zip(batch, decoded, strict=True) if isinstance(r, str)]
    good = [(p, r) for p, r in zip(batch, decoded, strict=True) if not isinstance(r, str)]
    if not good:
        return out
    vectors = embed(np.stack([pixels for _, pixels in good]))
    if vectors.shape[1] != dim:
        raise HeadError(
            f"the backbone gives {vectors.shape[1]}-d vectors but the head takes {dim}; train the head again"
        )
    logits = head_logits(model, vectors)
    probs = softmax(logits)
    for (path, _), row_logits, row_probs in zip(good, logits, probs, strict=True):
        best = np.argsort(-row_probs, kind="stable")[:top_k]
        top = [(recipe.class_names[i], float(row_probs[i])) for i in best]
        out.append(Prediction(path, top, row_logits))
    return out
