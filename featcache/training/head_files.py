"""A head folder: ``head.keras``, ``head.json``, ``history.csv``, ``learning_curves.png``; writing, reading, checking.

``head.keras`` is the best-epoch model (float32 (dim,) vectors -> (n_classes,) logits),
``head.json`` (format ``featcache-head`` version 1) says what it was trained on: cache
fingerprint, class names, preprocessing, weights, options, best epoch, metrics. ``history.csv``
holds per-epoch loss and accuracy on train and validation. ``head.json`` is written last, so a
folder without it is not a head. Models are loaded with ``safe_mode=True``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from featcache.config import check_out_folder
from featcache.errors import HeadError

HEAD_FORMAT, HEAD_FORMAT_VERSION = "featcache-head", 1
MODEL_FILE, META_FILE = "head.keras", "head.json"
HISTORY_FILE, CURVES_FILE = "history.csv", "learning_curves.png"
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")
#: what serving a head needs from its head.json
SERVING_KEYS = ("class_names", "feature_dim", "preprocessing", "weights", "weights_id")


def import_keras():
    from featcache.backbones.xception import quiet_tensorflow

    quiet_tensorflow()
    import keras

    return keras


def save_head(out: str | Path, model, metadata: dict, history: dict[str, list[float]]) -> Path:
    """Write a head directory; ``head.json`` goes last (atomically), so a half-written one is no head."""
    from featcache.training.plots import learning_curves

    out = Path(out)
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / META_FILE).unlink(missing_ok=True)
    model.save(out / MODEL_FILE)
    write_history(out / HISTORY_FILE, history)
    title = f"{Path(metadata['cache_path']).name}: best epoch {metadata['best_epoch']}"
    learning_curves(history, metadata["best_epoch"], out / CURVES_FILE, title)
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(metadata, indent=2) + "\n")
    os.replace(tmp, out / META_FILE)
    return out


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """``epoch,loss,accuracy,val_loss,val_accuracy`` with one row per epoch (1-based)."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["epoch", *HISTORY_KEYS])
        for i in range(len(history["loss"])):
            writer.writerow([i + 1, *(repr(history[key][i]) for key in HISTORY_KEYS)])


def read_history(path: Path) -> dict[str, list[float]]:
    """The history written by :func:`write_history`."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {key: [float(row[key]) for row in rows] for key in HISTORY_KEYS}


def read_head_metadata(directory: str | Path) -> dict:
    """The parsed ``head.json`` of ``directory``; HeadError when it is missing or not a featcache head."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not directory.is_dir() or not meta_path.is_file():
        raise HeadError(f"no trained head at {directory}; run `featcache train-head CACHE --out {directory}` first")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HeadError(f"{meta_path} is unreadable ({exc}); retrain the head with featcache train-head") from None
    if not isinstance(meta, dict) or meta.get("format") != HEAD_FORMAT:
        raise HeadError(f"{directory} is not a featcache head ({META_FILE} lacks format {HEAD_FORMAT!r})")
    if int(meta.get("format_version", 0)) > HEAD_FORMAT_VERSION:
        raise HeadError(f"{directory} has head format {meta['format_version']}; upgrade featcache to read it")
    return meta


def load_head(directory: str | Path):
    """``(keras_model, metadata)`` of a head folder, loaded with ``safe_mode=True``."""
    directory = Path(directory)
    meta = read_head_metadata(directory)
    missing = [key for key in SERVING_KEYS if meta.get(key) is None]
    if missing:
        raise HeadError(f"{directory / META_FILE} lacks {', '.join(missing)}; train the head again")
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise HeadError(f"{directory} has {META_FILE} but no {MODEL_FILE}; retrain it with featcache train-head")
    keras = import_keras()
    try:
        model = keras.saving.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged or foreign file
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise HeadError(f"{model_path} cannot be loaded ({reason}); retrain it with featcache train-head") from None
    return model, meta


def head_logits(model, vectors: np.ndarray) -> np.ndarray:
    """The head's logits of float32 vectors (n, dim): float32 (n, k)."""
    keras = import_keras()
    return np.asarray(keras.ops.convert_to_numpy(model(vectors, training=False)), dtype=np.float32)


def check_head_matches(meta: dict, fingerprint: str, class_names: list[str], cache_path: str | Path) -> None:
    """HeadError unless the head was trained on a cache with this fingerprint and these classes."""
    if meta.get("cache_fingerprint") != fingerprint:
        raise HeadError(
            f"the head was trained on a cache with another fingerprint ({str(meta.get('cache_fingerprint'))[:12]}, "
            f"{cache_path} has {fingerprint[:12]}); pass the cache it was trained on or retrain it with "
            f"featcache train-head {cache_path}"
        )
    if list(meta.get("class_names", [])) != list(class_names):
        raise HeadError(
            f"the head knows classes {meta.get('class_names')} but {cache_path} has {class_names}; "
            f"retrain it with featcache train-head {cache_path}"
        )
