"""Writing one end-to-end model: raw RGB pixels -> recorded preprocessing -> frozen base + GAP -> head.

The model needs no featcache to run: its preprocessing is Keras layers (Xception's
``preprocess_input`` is ``x / 127.5 - 1``, a ``Rescaling`` layer; bases that rescale their input
themselves need none), so ``keras.saving.load_model(path, safe_mode=True)`` loads it. The class
names travel with it as ``featcache.json`` (a member of the ``.keras`` zip archive, or a file in
the SavedModel folder) and as ``<stem>.classes.json`` beside it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from featcache.backbones.keras_app import preprocessing_layers
from featcache.backbones.registry import PREPROCESS_FUNCTIONS, REGISTRY, BackboneSpec, preprocess_function
from featcache.config import ExportConfig, check_out_file
from featcache.errors import ConfigError, ExportError
from featcache.images import PreprocessSpec
from featcache.serving.recipe import Recipe, live_backbone, require_match
from featcache.training.head_files import head_logits, load_head
from featcache.training.metrics import softmax

log = logging.getLogger(__name__)

MODEL_FORMAT = "featcache-model"
DESCRIPTION = "featcache.json"
CHECK_TOLERANCE = 1e-4  # probabilities of the written model vs the predict path, on probe pixels


@dataclass
class ExportResult:
    """What ``export`` wrote, the input the model takes, and how closely it reproduces ``predict``."""

    out: Path
    format: str
    classes_path: Path
    image_size: int
    class_names: list[str]
    max_prob_diff: float

    def summary(self) -> str:
        """What was written, the input it takes, and how closely it reproduces predict."""
        size = self.image_size
        return "\n".join(
            [
                f"model: {self.out} ({self.format}; input (n, {size}, {size}, 3) RGB pixels in [0, 255])",
                f"classes: {self.classes_path} ({', '.join(self.class_names)})",
                f"checked: probabilities within {self.max_prob_diff:.1e} of featcache predict",
            ]
        )


def export(config: ExportConfig, backbone=None) -> ExportResult:
    """Write the head of ``config.head`` with its frozen backbone and preprocessing as one model.

    ``backbone`` needs ``identity()`` and ``build_model()`` (a Keras model from pixels in
    [-1, 1] to vectors); the default is Xception with the weights the head's cache was made with.
    """
    check_out_file(config.out)
    head_model, meta = load_head(config.head)
    recipe = Recipe.from_head(meta)
    if recipe.spec.preprocess not in PREPROCESS_FUNCTIONS:
        raise ConfigError(f"export does not know the preprocessing {recipe.spec.preprocess} of this head's cache")
    base = PREPROCESS_FUNCTIONS[recipe.spec.preprocess]
    # The exported graph is Keras at float32, whatever runtime computed the cache.
    live = live_backbone(replace(recipe, precision="float32"), config.weights, backbone)
    require_match(live, recipe, f"the head in {config.head}")
    backbone_model = live.backbone.build_model()
    model = end_to_end(backbone_model, head_model, recipe.spec.image_size, base)
    description = _description(meta, recipe)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    if config.format == "keras":
        _write_keras(model, config.out, description)
    else:
        _write_saved_model(model, config.out, recipe.spec.image_size, description)
    classes_path = config.out.with_name(config.out.stem + ".classes.json")
    classes_path.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
    diff = _check(backbone_model, head_model, config, recipe.spec)
    log.info("export %s: probabilities within %.2e of the predict path", config.out, diff)
    return ExportResult(config.out, config.format, classes_path, recipe.spec.image_size, list(recipe.class_names), diff)


def end_to_end(backbone_model, head_model, image_size: int, base: BackboneSpec = REGISTRY["xception"]):
    """Keras model: RGB pixels (n, s, s, 3), uint8 or float in [0, 255] -> class probabilities (n, k)."""
    import keras

    backbone_model.trainable = False
    head_model = _uncompiled_copy(keras, head_model)
    pixels = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = pixels
    for layer in preprocessing_layers(keras, base):
        x = layer(x)
    x = backbone_model(x, training=False)
    logits = head_model(x, training=False)
    probabilities = keras.layers.Softmax(name="probabilities")(logits)
    return keras.Model(pixels, probabilities, name="featcache_classifier")


def _uncompiled_copy(keras, model):
    """The same layers and weights without the optimizer a loaded head may carry (it is not for serving)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.trainable = False
    return copy


def _description(meta: dict, recipe: Recipe) -> dict:
    spec = recipe.spec
    return {
        "format": MODEL_FORMAT,
        "format_version": 1,
        "class_names": list(recipe.class_names),
        "input": f"RGB pixels (n, {spec.image_size}, {spec.image_size}, 3), uint8 or float in [0, 255]",
        "output": "class probabilities (n, k), in the order of class_names",
        "preprocessing": spec.to_dict(),
        "weights_id": recipe.weights_id,
        "cache_fingerprint": meta.get("cache_fingerprint"),
        "head_metrics": meta.get("metrics"),
    }


def _write_keras(model, out: Path, description: dict) -> None:
    """Save beside ``out``, add the description to the archive, then rename over ``out``."""
    tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.keras")
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(DESCRIPTION, json.dumps(description, indent=2))
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_saved_model(model, out: Path, image_size: int, description: dict) -> None:
    """A SavedModel with endpoints ``serve`` (float32 pixels, the default) and ``serve_uint8``."""
    import keras
    import tensorflow as tf

    if out.exists() and not (out / "saved_model.pb").is_file():
        raise ConfigError(f"{out} exists and is not a SavedModel; choose another --out")
    shape = [None, image_size, image_size, 3]
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", lambda x: model(x, training=False), input_signature=[tf.TensorSpec(shape, tf.float32, name="image")]
    )
    archive.add_endpoint(
        "serve_uint8",
        lambda x: model(tf.cast(x, tf.float32), training=False),
        input_signature=[tf.TensorSpec(shape, tf.uint8, name="image")],
    )
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        archive.write_out(str(tmp), verbose=False)
        (tmp / DESCRIPTION).write_text(json.dumps(description, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check(backbone_model, head_model, config: ExportConfig, spec: PreprocessSpec) -> float:
    """Reload what was written and compare it with the predict path on seeded probe pixels."""
    preprocess_input, image_size = preprocess_function(spec.preprocess), spec.image_size
    probe = np.random.default_rng(0).integers(0, 256, (4, image_size, image_size, 3), dtype=np.uint8)
    vectors = np.asarray(backbone_model(preprocess_input(probe.astype(np.float32)), training=False))
    expected = softmax(head_logits(head_model, vectors))
    got = _run_written(config, probe)
    diff = float(np.max(np.abs(got - expected)))
    if not diff <= CHECK_TOLERANCE:
        raise ExportError(
            f"the written model differs from featcache predict by {diff:.2e} on probe images; "
            f"do not ship {config.out}, and report this with your TensorFlow and Keras versions"
        )
    return diff


def _run_written(config: ExportConfig, probe: np.ndarray) -> np.ndarray:
    import keras

    if config.format == "keras":
        loaded = keras.saving.load_model(config.out, safe_mode=True, compile=False)
        return np.asarray(loaded.predict(probe, verbose=0), dtype=np.float32)
    import tensorflow as tf

    loaded = tf.saved_model.load(str(config.out))
    return np.asarray(loaded.serve_uint8(tf.constant(probe)), dtype=np.float32)
