"""The reference recipe as the lesson writes it, and its tf.data variant, each trained in a process of its own.

    python -m benchmarks.recipes lesson DATA_DIR --weights FILE --epochs 10 --out result.json
    python -m benchmarks.recipes tf-data DATA_DIR --weights FILE --epochs 2 --out result.json

``lesson``: ``ImageDataGenerator(preprocessing_function=preprocess_input)`` and
``flow_from_directory(target_size=(150, 150), batch_size=32, class_mode="categorical")`` for
train and validation (validation unshuffled, as in the lesson), frozen ``Xception(include_top=False)``
called with ``training=False``, ``GlobalAveragePooling2D``, ``Dense(n_classes)``, ``Adam(0.01)``,
``CategoricalCrossentropy(from_logits=True)``, ``model.fit(train, epochs=..., validation_data=val)``.
``tf-data``: the same model fed by ``image_dataset_from_directory`` (nearest resize) mapped through
``preprocess_input`` and prefetched. Only TensorFlow and Keras run here, no featcache code.

Writes JSON: start-up seconds (imports; model build with the weights file), each epoch's seconds
(its validation pass included, as ``fit`` runs it), the whole ``fit`` call's seconds and the
validation accuracy after each epoch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import click

SIZE = 150
BATCH = 32


def lesson_datasets(data: Path):
    """The lesson's generators: train shuffled, validation not; pixels loaded with nearest resize."""
    from tensorflow.keras.applications.xception import preprocess_input
    from tensorflow.keras.preprocessing.image import ImageDataGenerator

    train_gen = ImageDataGenerator(preprocessing_function=preprocess_input)
    train = train_gen.flow_from_directory(
        str(data / "train"), target_size=(SIZE, SIZE), batch_size=BATCH, class_mode="categorical"
    )
    val_gen = ImageDataGenerator(preprocessing_function=preprocess_input)
    val = val_gen.flow_from_directory(
        str(data / "validation"), target_size=(SIZE, SIZE), batch_size=BATCH, class_mode="categorical", shuffle=False
    )
    return train, val, train.num_classes


def tf_data_datasets(data: Path, seed: int):
    """``image_dataset_from_directory`` (nearest) -> ``preprocess_input`` -> prefetch, for train and validation."""
    import tensorflow as tf
    from tensorflow.keras.applications.xception import preprocess_input

    def load(folder: Path, shuffle: bool):
        ds = tf.keras.utils.image_dataset_from_directory(
            folder,
            image_size=(SIZE, SIZE),
            batch_size=BATCH,
            label_mode="categorical",
            interpolation="nearest",
            shuffle=shuffle,
            seed=seed,
            verbose=False,
        )
        classes = len(ds.class_names)
        ds = ds.map(lambda x, y: (preprocess_input(tf.cast(x, tf.float32)), y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE), classes

    train, classes = load(data / "train", shuffle=True)
    val, _ = load(data / "validation", shuffle=False)
    return train, val, classes


def make_model(weights: str, n_classes: int):
    """The lesson's model: frozen Xception -> GlobalAveragePooling2D -> Dense logits, Adam 0.01."""
    from tensorflow import keras

    from benchmarks.bare_script import xception_base  # Xception(weights="imagenet"), or the same weights from a file

    base_model = xception_base(weights)
    base_model.trainable = False
    inputs = keras.Input(shape=(SIZE, SIZE, 3))
    base = base_model(inputs, training=False)
    vectors = keras.layers.GlobalAveragePooling2D()(base)
    outputs = keras.layers.Dense(n_classes)(vectors)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=0.01),
        loss=keras.losses.CategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class EpochClock:
    """A Keras callback's worth of timing: wall seconds of each epoch, validation included."""

    def __init__(self, keras):
        self.seconds: list[float] = []
        self._start = 0.0
        self.callback = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: self._begin(), on_epoch_end=lambda epoch, logs: self._end()
        )

    def _begin(self) -> None:
        self._start = time.perf_counter()

    def _end(self) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def train(variant: str, data: Path, weights: str, epochs: int, seed: int) -> dict:
    """Build the datasets and the model, fit, and return the timings and the validation accuracy."""
    start = time.perf_counter()
    import tensorflow as tf

    imported = time.perf_counter()
    tf.keras.utils.set_random_seed(seed)
    train_ds, val_ds, classes = lesson_datasets(data) if variant == "lesson" else tf_data_datasets(data, seed)
    model = make_model(weights, classes)
    built = time.perf_counter()
    clock = EpochClock(tf.keras)
    history = model.fit(train_ds, epochs=epochs, validation_data=val_ds, callbacks=[clock.callback], verbose=0)
    return {
        "variant": variant,
        "import_seconds": round(imported - start, 2),
        "build_seconds": round(built - imported, 2),
        "fit_seconds": round(time.perf_counter() - built, 2),
        "epoch_seconds": [round(s, 2) for s in clock.seconds],
        "val_accuracy": [round(float(a), 4) for a in history.history["val_accuracy"]],
    }


@click.command()
@click.argument("variant", type=click.Choice(["lesson", "tf-data"]))
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--weights", required=True, help="Xception no-top weights file, or imagenet.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs of model.fit.")
@click.option("--seed", type=int, default=0, show_default=True, help="keras.utils.set_random_seed.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Where the JSON result goes.")
def main(variant, data, weights, epochs, seed, out):
    """Train the reference recipe (lesson or tf-data variant) end to end and write its timings as JSON."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    out.write_text(json.dumps(train(variant, data, weights, epochs, seed), indent=2) + "\n")


if __name__ == "__main__":
    main()
