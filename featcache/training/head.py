"""Stage two: train a small Keras head on cached vectors and keep its best epoch (saved by :mod:`head_files`)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.config import DEFAULT_HEAD_DIR, HeadConfig, check_out_folder
from featcache.errors import ConfigError
from featcache.training.head_files import (
    CURVES_FILE,
    HEAD_FORMAT,
    HEAD_FORMAT_VERSION,
    HISTORY_FILE,
    HISTORY_KEYS,
    META_FILE,
    MODEL_FILE,
    import_keras,
    save_head,
)
from featcache.training.labels import label_issue_rows
from featcache.training.loading import keras_batches
from featcache.training.splits import Splits, load_splits
from featcache.training.stream import CHUNK_ROWS, EpochBatches

log = logging.getLogger(__name__)

#: validation rows per batch: evaluation keeps no gradients, so larger batches only go faster
EVAL_BATCH_ROWS = 1024


@dataclass
class FitResult:
    """A trained head: ``model`` holds the best epoch's weights; ``history`` maps HISTORY_KEYS to lists."""

    model: object
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float
    streamed: bool = False
    peak_rows_held: int = 0

    @property
    def epochs_run(self) -> int:
        return len(self.history["loss"])

    def at_best(self, key: str) -> float:
        return self.history[key][self.best_epoch - 1]


@dataclass
class HeadResult:
    """What ``train_head`` did and where it saved the head."""

    out: Path
    metadata: dict
    history: dict[str, list[float]]
    val_carved: bool
    cache: Path | str = ""

    @property
    def best_epoch(self) -> int:
        return self.metadata["best_epoch"]

    @property
    def metrics(self) -> dict:
        return self.metadata["metrics"]

    def summary(self) -> str:
        """The best epoch's accuracies, the time taken and what was saved: what ``featcache train-head`` prints."""
        m, meta = self.metrics, self.metadata
        held = "; held out from train, the cache has no validation split" if m["validation_carved"] else ""
        shape = f"{len(meta['class_names'])} classes, {meta['feature_dim']}-d vectors of {self.cache}"
        return "\n".join(
            [
                f"head: {self.out}  ({shape})",
                f"best epoch {self.best_epoch} of {m['epochs_run']}: train accuracy {m['train_accuracy']:.4f}, "
                f"validation accuracy {m['val_accuracy']:.4f} (loss {m['train_loss']:.4f} / {m['val_loss']:.4f})",
                f"trained in {m['fit_seconds']:.1f} s on {m['n_train']} rows{_views(m)}{_left_out(m)}, "
                f"validated on {m['n_validation']}{held}",
                *_streaming_line(meta.get("memory")),
                f"saved: {self.out / MODEL_FILE}, {META_FILE}, {HISTORY_FILE}, {CURVES_FILE}",
            ]
        )


def _left_out(metrics: dict) -> str:
    dropped = metrics.get("label_issues_dropped", 0)
    return f" ({dropped} likely mislabelled train rows left out)" if dropped else ""


def _views(metrics: dict) -> str:
    views = metrics.get("n_views", 0)
    return (
        f" (each epoch drawing each row's clean vector or one of its {views} augmented views in all)" if views else ""
    )


def _streaming_line(memory: dict | None) -> list[str]:
    if not memory or not memory["streamed"]:
        return []
    return [f"read from the cache in chunks of {CHUNK_ROWS} rows: {memory['reason']}"]


def train_head(
    cache: str | Path, out: str | Path = DEFAULT_HEAD_DIR, config: HeadConfig | None = None, tensorboard=None
) -> HeadResult:
    """Train a head on the train split of ``cache``, keep its best validation epoch, save it into ``out``."""
    config = config or HeadConfig()
    check_out_folder(Path(out))
    if tensorboard is not None:
        _check_tensorboard()
    splits = load_splits(
        cache, config.holdout_fraction, config.memory_budget, False, config.with_views, config.drop_leaks,
        label_issues=label_issue_rows(cache, config.drop_label_issues),
    )  # fmt: skip
    fit = fit_head(splits, config, tensorboard=tensorboard)
    metadata = head_metadata(splits, config, fit)
    save_head(out, fit.model, metadata, fit.history)
    return HeadResult(Path(out), metadata, fit.history, splits.val_carved, cache)


def build_head(feature_dim: int, n_classes: int, config: HeadConfig, name: str = "featcache_head"):
    """The functional head: Input((feature_dim,)) -> [Dense relu, Dropout]* -> Dense(n_classes) logits."""
    keras = import_keras()
    inputs = keras.Input((feature_dim,), name="features")
    x = inputs
    if config.dropout and not config.inner:
        x = keras.layers.Dropout(config.dropout)(x)
    for units in config.inner:
        x = keras.layers.Dense(units, activation="relu")(x)
        if config.dropout:
            x = keras.layers.Dropout(config.dropout)(x)
    outputs = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def fit_head(splits: Splits, config: HeadConfig, tensorboard=None) -> FitResult:
    """Train on ``splits.train``, judge each epoch on ``splits.validation``, restore the best epoch.

    Batches follow :mod:`featcache.training.stream`, from memory or read from the cache in chunks
    as ``splits`` holds them: the same splits, options and seed give the same history either way.
    The best epoch is the first with the highest validation accuracy, as
    ``ModelCheckpoint(save_best_only=True)`` keeps it.
    """
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    k = len(splits.class_names)
    model = build_head(splits.feature_dim, k, config)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.lr),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train = splits.batches(splits.train, config.batch_size, shuffle=True, seed=config.seed)
    validation = splits.batches(splits.validation, max(config.batch_size, EVAL_BATCH_ROWS))
    try:
        with tempfile.TemporaryDirectory(prefix="featcache-head-") as tmp:
            best_path = os.path.join(tmp, "best.weights.h5")
            start = time.perf_counter()
            fitted = model.fit(
                keras_batches(train, k),
                epochs=config.epochs,
                validation_data=keras_batches(validation, k),
                shuffle=False,  # the batches are shuffled already, chunk by chunk
                callbacks=_callbacks(keras, config, best_path, tensorboard),
                verbose=0,
            )
            seconds = time.perf_counter() - start
            model.load_weights(best_path)
    finally:
        train.vectors.close()
        validation.vectors.close()
    history = {key: [float(v) for v in fitted.history[key]] for key in HISTORY_KEYS}
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    return FitResult(model, history, best_epoch, seconds, train.vectors.streamed, _peak_rows(train, validation))


def _peak_rows(*batches: EpochBatches) -> int:
    """The most rows each streamed split held at once, summed (0 in memory)."""
    return sum(getattr(b.vectors, "peak_rows_held", 0) for b in batches)


def _callbacks(keras, config: HeadConfig, best_path: str, tensorboard) -> list:
    def report(epoch, logs):
        log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k} {logs[k]:.4f}" for k in HISTORY_KEYS if k in logs))

    callbacks = [
        keras.callbacks.ModelCheckpoint(
            best_path, monitor="val_accuracy", mode="max", save_best_only=True, save_weights_only=True
        ),
        keras.callbacks.LambdaCallback(on_epoch_end=report),
    ]
    if config.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=config.early_stopping)
        )
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(tensorboard)))
    return callbacks


def head_metadata(splits: Splits, config: HeadConfig, fit: FitResult) -> dict:
    """The ``head.json`` contract: what the head was trained on, how, and how well."""
    attrs = splits.attrs
    return {
        "format": HEAD_FORMAT,
        "format_version": HEAD_FORMAT_VERSION,
        "cache_fingerprint": splits.fingerprint,
        "cache_path": str(Path(splits.cache_path).resolve()),
        "class_names": list(splits.class_names),
        "feature_dim": splits.feature_dim,
        "preprocessing": json.loads(attrs.get("preprocessing", "{}")),
        "weights": attrs.get("weights"),
        "weights_id": attrs.get("weights_id"),
        "image_size": attrs.get("image_size"),
        "precision": attrs.get("precision", "float32"),
        "backbone": attrs.get("backbone"),
        "pooling": attrs.get("pooling"),
        "options": config.to_dict(),
        "best_epoch": fit.best_epoch,
        "metrics": {
            "val_accuracy": fit.at_best("val_accuracy"),
            "val_loss": fit.at_best("val_loss"),
            "train_accuracy": fit.at_best("accuracy"),
            "train_loss": fit.at_best("loss"),
            "epochs_run": fit.epochs_run,
            "fit_seconds": round(fit.seconds, 3),
            "n_train": len(splits.train),
            "n_validation": len(splits.validation),
            "n_views": len(splits.train.views.x) if splits.train.views is not None else 0,
            "leaks_dropped": splits.dropped,
            "label_issues_dropped": len(splits.label_issues),
            "validation_carved": splits.val_carved,
        },
        "memory": splits.memory.to_dict(),
        "history_file": HISTORY_FILE,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package; pip install tensorboard, or leave it out")
