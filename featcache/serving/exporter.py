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
    The model and its classes are written under temporary names beside ``config.out``, checked
    against the predict path, and only then renamed into place: a model that fails the check is
    removed, and what ``config.out`` held before is kept.
    """
    check_out_file(config.out)
    classes_path = config.out.with_name(config.out.stem + ".classes.json")
    _check_targets(config, classes_path)
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
    model_tmp, classes_tmp = _beside(config.out), _beside(classes_path)
    try:
        if config.format == "keras":
            _write_keras(model, model_tmp, description)
        else:
            _write_saved_model(model, model_tmp, recipe.spec.image_size, description)
        classes_tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        diff = _check(backbone_model, head_model, model_tmp, config, recipe.spec)
        _rename_into_place(model_tmp, config.out)
        os.replace(classes_tmp, classes_path)
    finally:
        _remove(model_tmp)
        classes_tmp.unlink(missing_ok=True)
    log.info("export %s: probabilities within %.2e of the predict path", config.out, diff)
    return ExportResult(config.out, config.format, classes_path, recipe.spec.image_size, list(recipe.class_names), diff)


def _check_targets(config: ExportConfig, classes_path: Path) -> None:
    """Refuse, before any work, an ``out`` or classes file that export would not replace."""
    out = config.out
    if config.format == "saved_model" and out.exists() and not (out / "saved_model.pb").is_file():
        raise ConfigError(f"{out} exists and is not a SavedModel; choose another --out")
    for path in [classes_path] if config.format == "saved_model" else [out, classes_path]:
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, where export writes a file; choose another --out")


def _beside(path: Path) -> Path:
    """A temporary name in the folder of ``path`` (hidden, with this process's id, the same suffix)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def _rename_into_place(written: Path, out: Path) -> None:
    """Rename ``written`` to ``out``. A file replaces ``out`` atomically; a folder cannot replace a folder
    in one rename, so an existing ``out`` is first renamed aside, put back if the second rename fails,
    and removed after it: ``out`` is never a mix of both."""
    if not (written.is_dir() and out.exists()):
        os.replace(written, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    os.replace(out, old)
    try:
        os.replace(written, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _remove(path: Path) -> None:
    """Remove a temporary file or folder, if it is still there."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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


def _write_keras(model, path: Path, description: dict) -> None:
    """Save the model at ``path`` (a ``.keras`` name) and add the description to the archive."""
    model.save(path)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(DESCRIPTION, json.dumps(description, indent=2))


def _write_saved_model(model, path: Path, image_size: int, description: dict) -> None:
    """A SavedModel folder at ``path`` with endpoints ``serve`` (float32 pixels, the default) and ``serve_uint8``."""
    import keras
    import tensorflow as tf

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
    archive.write_out(str(path), verbose=False)
    (path / DESCRIPTION).write_text(json.dumps(description, indent=2), encoding="utf-8")


def _check(backbone_model, head_model, written: Path, config: ExportConfig, spec: PreprocessSpec) -> float:
    """Load the written model back and compare each of its entry points with the predict path on seeded
    probe pixels; ExportError names the entry point furthest off. Returns the largest difference."""
    preprocess_input, image_size = preprocess_function(spec.preprocess), spec.image_size
    probe = np.random.default_rng(0).integers(0, 256, (4, image_size, image_size, 3), dtype=np.uint8)
    vectors = np.asarray(backbone_model(preprocess_input(probe.astype(np.float32)), training=False))
    expected = softmax(head_logits(head_model, vectors))
    diffs = {name: float(np.max(np.abs(got - expected))) for name, got in _run_written(written, config, probe).items()}
    worst = max(diffs, key=lambda name: np.nan_to_num(diffs[name], nan=np.inf))  # NaN is as far off as can be
    if not diffs[worst] <= CHECK_TOLERANCE:
        raise ExportError(
            f"the written model ({worst}) differs from featcache predict by {diffs[worst]:.2e} on probe images, "
            f"so {config.out} was left as it was; report this with your TensorFlow and Keras versions"
        )
    return diffs[worst]


def _run_written(written: Path, config: ExportConfig, probe: np.ndarray) -> dict[str, np.ndarray]:
    """Probabilities of the model at ``written`` on uint8 ``probe`` pixels, by each way in: the ``.keras``
    model given uint8 and float32 pixels, or the SavedModel's ``serve`` and ``serve_uint8`` endpoints."""
    try:
        if config.format == "keras":
            import keras

            loaded = keras.saving.load_model(written, safe_mode=True, compile=False)
            outputs = {"uint8 pixels": loaded.predict(probe, verbose=0)}
            outputs["float32 pixels"] = loaded.predict(probe.astype(np.float32), verbose=0)
        else:
            import tensorflow as tf

            loaded = tf.saved_model.load(str(written))
            outputs = {
                "serve": loaded.serve(tf.constant(probe, tf.float32)),
                "serve_uint8": loaded.serve_uint8(tf.constant(probe)),
            }
    except Exception as exc:  # Keras and TensorFlow raise many types for a model they cannot load or run
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"the written model cannot be loaded back ({reason}), so {config.out} was left as it was; "
            "report this with your TensorFlow and Keras versions"
        ) from None
    return {name: np.asarray(got, dtype=np.float32) for name, got in outputs.items()}
