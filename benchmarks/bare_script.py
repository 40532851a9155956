"""A plain script without featcache: the forward passes a user would write by hand, timed as a whole process.

    python benchmarks/bare_script.py DATA_DIR OUT.npy --weights FILE    # or python -m benchmarks.bare_script

Builds ``Xception(include_top=False)`` + ``GlobalAveragePooling2D`` with the weights file, decodes
every image under DATA_DIR with Keras' ``load_img`` (150 x 150, nearest), applies
``preprocess_input``, predicts in batches of 32 and saves the vectors with ``numpy.save``.
Decoding and the forward pass take turns in one thread, as a plain loop does.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

SIZE = 150
SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def xception_base(weights: str):
    """``Xception(include_top=False)`` at 150 x 150 with ImageNet weights from Keras, or from a weights file."""
    import keras

    if weights == "imagenet":
        return keras.applications.Xception(weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 3))
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    base.load_weights(weights)
    return base


def build_model(weights: str):
    """Frozen Xception + GlobalAveragePooling2D: float pixels in [-1, 1] -> 2048-d vectors."""
    import keras

    base = xception_base(weights)
    base.trainable = False
    inputs = keras.Input((SIZE, SIZE, 3))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(base(inputs, training=False)))


def load_batch(files: list[Path]) -> np.ndarray:
    """float32 (n, 150, 150, 3) RGB pixels in [0, 255] of ``files``, by ``load_img`` with the nearest filter."""
    import keras

    images = [keras.utils.load_img(f, target_size=(SIZE, SIZE), interpolation="nearest") for f in files]
    return np.stack([keras.utils.img_to_array(image) for image in images])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from keras.applications.xception import preprocess_input

    files = image_files(args.data)
    model = build_model(args.weights)
    vectors = []
    for i in range(0, len(files), args.batch_size):
        batch = load_batch(files[i : i + args.batch_size])
        vectors.append(model.predict_on_batch(preprocess_input(batch)))
    np.save(args.out, np.concatenate(vectors))
    print(f"{len(files)} images")


if __name__ == "__main__":
    main()
