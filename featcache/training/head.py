"""Stage two: train a small Keras head on cached vectors and keep its best epoch (saved by :mod:`head_files`)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from featcache.config import DEFAULT_HEAD_DIR, check_int, check_out_folder
from featcache.errors import ConfigError
from featcache.training.head_files import (
    HEAD_FORMAT,
    HEAD_FORMAT_VERSION,
    HISTORY_FILE,
    HISTORY_KEYS,
    import_keras,
    save_head,
)
from featcache.training.splits import Splits, load_splits, one_hot

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class HeadConfig:
    """Options of ``featcache train-head`` (and of the head ``featcache compare`` trains).

    The defaults are the reference recipe: vectors -> Dense(n_classes) logits, Adam(lr=0.01),
    categorical cross-entropy on one-hot labels, batch 32, 10 epochs. ``inner`` adds Dense relu
    layers before the output, ``dropout`` follows each of them (or the input when there are none),
    ``early_stopping`` is a patience in epochs on validation accuracy, and ``val_fraction`` is the
    share of train rows held out when the cache has no validation split.
    """

    lr: float = 0.01
    batch_size: int = 32
    epochs: int = 10
    inner: tuple[int, ...] = ()
    dropout: float = 0.0
    seed: int = 0
    early_stopping: int | None = None
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        object.__setattr__(self, "inner", tuple(self.inner))
        check_int("epochs", self.epochs, 1, "train for at least one epoch, e.g. --epochs 10")
        check_int("batch_size", self.batch_size, 1, "use a positive batch size such as 32")
        check_int("seed", self.seed, 0, "use a non-negative integer seed")
        for units in self.inner:
            check_int("inner", units, 1, "give the units of each inner Dense layer, e.g. --inner 100")
        if self.early_stopping is not None:
            check_int("early_stopping", self.early_stopping, 1, "give a patience in epochs, e.g. 3")
        _check_fraction("lr", self.lr, 0.0, 10.0, False, "the recipe uses 0.01")
        _check_fraction("dropout", self.dropout, 0.0, 1.0, True, "e.g. 0.2")
        _check_fraction("val_fraction", self.val_fraction, 0.0, 1.0, False, "e.g. 0.2")

    def to_dict(self) -> dict:
        """The options as JSON values, as recorded in ``head.json``."""
        return {**asdict(self), "inner": list(self.inner)}


def _check_fraction(name: str, value, low: float, high: float, low_ok: bool, hint: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (low <= value < high if low_ok else low < value < high):
        allowed = f"[{low:g}, {high:g})" if low_ok else f"({low:g}, {high:g})"
        raise ConfigError(f"{name} must be a number in {allowed}, got {value!r} ({hint})")


@dataclass
class FitResult:
    """A trained head: ``model`` holds the best epoch's weights; ``history`` maps HISTORY_KEYS to lists."""

    model: object
    history: dict[str, list[float]]
    best_epoch: int
    seconds: float

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

    @property
    def best_epoch(self) -> int:
        return self.metadata["best_epoch"]

    @property
    def metrics(self) -> dict:
        return self.metadata["metrics"]


def train_head(
    cache: str | Path, out: str | Path = DEFAULT_HEAD_DIR, config: HeadConfig | None = None, tensorboard=None
) -> HeadResult:
    """Train a head on the train split of ``cache``, keep its best validation epoch, save it into ``out``."""
    config = config or HeadConfig()
    check_out_folder(Path(out))
    if tensorboard is not None:
        _check_tensorboard()
    splits = load_splits(cache, config.val_fraction)
    fit = fit_head(splits, config, tensorboard=tensorboard)
    metadata = head_metadata(splits, config, fit)
    save_head(out, fit.model, metadata, fit.history)
    return HeadResult(Path(out), metadata, fit.history, splits.val_carved)


def build_head(feature_dim: int, n_classes: int, config: HeadConfig):
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
    return keras.Model(inputs, outputs, name="featcache_head")


def fit_head(splits: Splits, config: HeadConfig, tensorboard=None) -> FitResult:
    """Train on ``splits.train``, judge each epoch on ``splits.validation``, restore the best epoch.

    The best epoch is the first with the highest validation accuracy, as
    ``ModelCheckpoint(save_best_only=True)`` keeps it. Same splits, options and seed give the
    same history.
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
    with tempfile.TemporaryDirectory(prefix="featcache-head-") as tmp:
        best_path = os.path.join(tmp, "best.weights.h5")
        callbacks = _callbacks(keras, config, best_path, tensorboard)
        start = time.perf_counter()
        fitted = model.fit(
            splits.train.x,
            one_hot(splits.train.y, k),
            batch_size=config.batch_size,
            epochs=config.epochs,
            validation_data=(splits.validation.x, one_hot(splits.validation.y, k)),
            shuffle=True,
            callbacks=callbacks,
            verbose=0,
        )
        seconds = time.perf_counter() - start
        model.load_weights(best_path)
    history = {key: [float(v) for v in fitted.history[key]] for key in HISTORY_KEYS}
    best_epoch = int(np.argmax(history["val_accuracy"])) + 1
    return FitResult(model, history, best_epoch, seconds)


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
            "validation_carved": splits.val_carved,
        },
        "history_file": HISTORY_FILE,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_tensorboard() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("--tensorboard needs the tensorboard package; pip install tensorboard, or leave it out")


