"""Writing one end-to-end model: raw RGB pixels -> recorded preprocessing -> frozen base + GAP -> head.

The model needs no featcache to run: its preprocessing is Keras layers (Xception's
``preprocess_input`` is ``x / 127.5 - 1``, a ``Rescaling`` layer; bases that rescale their input
themselves need none), so ``keras.saving.load_model(path, safe_mode=True)`` loads it, and the
``.tflite`` and ``.onnx`` files run in LiteRT and ONNX Runtime alone. The class names travel with it
as ``featcache.json`` (in the ``.keras`` archive, the SavedModel folder or the ONNX metadata) and as
``<stem>.classes.json`` beside it. Before it is renamed into place, the written model is run by its
own runtime on real images and compared with the predict path (:mod:`featcache.serving.formats`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from featcache.backbones.keras_app import preprocessing_layers
from featcache.backbones.registry import PREPROCESS_FUNCTIONS, REGISTRY, BackboneSpec, preprocess_function
from featcache.cache.layout import read_cache
from featcache.config import ExportConfig, check_out_file
from featcache.errors import ConfigError, ExportError, FeatcacheError
from featcache.images import PreprocessSpec
from featcache.progress import batched
from featcache.serving.formats import format_for
from featcache.serving.recipe import Recipe, collect_images, decode, live_backbone, require_match
from featcache.training.head_files import head_logits, load_head
from featcache.training.metrics import softmax

log = logging.getLogger(__name__)

MODEL_FORMAT = "featcache-model"
CHECK_TOLERANCE = 1e-4  # probabilities of a float32 model vs the predict path, on the check images
#: a model with quantized weights passes when its top class is predict's on this share of the check images
QUANTIZED_AGREEMENT = 0.99
CHECK_BATCH = 32


@dataclass
class ExportResult:
    """What ``export`` wrote, the input the model takes, and how closely it reproduces ``predict``."""

    out: Path
    format: str
    classes_path: Path
    image_size: int
    class_names: list[str]
    check: Check
    quantize: str = "none"
    inputs: str = "uint8 or float"

    @property
    def max_prob_diff(self) -> float:
        return self.check.max_prob_diff

    def summary(self) -> str:
        """What was written, the input it takes, and how closely it reproduces predict."""
        size, check = self.image_size, self.check
        kind = self.format + (f", {self.quantize} quantization" if self.quantize != "none" else "")
        return "\n".join(
            [
                f"model: {self.out} ({kind}; input (n, {size}, {size}, 3) {self.inputs} RGB pixels in [0, 255])",
                f"classes: {self.classes_path} ({', '.join(self.class_names)})",
                f"checked: {check.images} images of {check.source} through {check.runtime}: top-1 agrees with "
                f"featcache predict on {check.agreeing} ({check.agreement:.1%}), probabilities within "
                f"{check.max_prob_diff:.1e}",
            ]
        )


@dataclass(frozen=True)
class Check:
    """How the written model, run by ``runtime``, compares with the predict path on ``images`` images:
    ``agreeing`` of them get the same top class (in every way into the model), ``max_prob_diff`` is the
    largest difference of a probability."""

    runtime: str
    way: str  # into the model: an endpoint, a pixel type, or the runtime's name where there is one way
    source: str
    images: int
    agreeing: int
    max_prob_diff: float

    @property
    def agreement(self) -> float:
        return self.agreeing / self.images


def export(config: ExportConfig, backbone=None) -> ExportResult:
    """Write the head of ``config.head`` with its frozen backbone and preprocessing as one model.

    ``backbone`` needs ``identity()`` and ``build_model()`` (a Keras model from pixels in
    [-1, 1] to vectors); the default is Xception with the weights the head's cache was made with.
    The model and its classes are written under temporary names beside ``config.out``, run by the
    format's own runtime on the check images (``config.check_images``, else the validation split of
    the head's cache) and compared with the predict path, and only then renamed into place: a model
    that fails the check is removed, and what ``config.out`` held before is kept.
    """
    check_out_file(config.out)
    writer = format_for(config.format, config.quantize)
    classes_path = config.out.with_name(config.out.stem + ".classes.json")
    _check_targets(config, classes_path)
    head_model, meta = load_head(config.head)
    recipe = Recipe.from_head(meta)
    if recipe.spec.preprocess not in PREPROCESS_FUNCTIONS:
        raise ConfigError(f"export does not know the preprocessing {recipe.spec.preprocess} of this head's cache")
    pixels, source = check_pixels(config, meta, recipe.spec)
    # The exported graph is Keras at float32, whatever runtime computed the cache.
    live = live_backbone(replace(recipe, precision="float32"), config.weights, backbone)
    require_match(live, recipe, f"the head in {config.head}")
    backbone_model = live.backbone.build_model()
    model = end_to_end(backbone_model, head_model, recipe.spec.image_size, PREPROCESS_FUNCTIONS[recipe.spec.preprocess])
    description = _description(meta, recipe, writer.inputs)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    model_tmp, classes_tmp = _beside(config.out), _beside(classes_path)
    try:
        writer.write(model, model_tmp, recipe.spec.image_size, description)
        classes_tmp.write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        expected = predicted_probabilities(backbone_model, head_model, pixels, recipe.spec)
        check = _check(writer, model_tmp, config, pixels, expected, source)
        _rename_into_place(model_tmp, config.out)
        os.replace(classes_tmp, classes_path)
    finally:
        _remove(model_tmp)
        classes_tmp.unlink(missing_ok=True)
    log.info("export %s: probabilities within %.2e of the predict path", config.out, check.max_prob_diff)
    image_size, names = recipe.spec.image_size, list(recipe.class_names)
    return ExportResult(
        config.out, config.format, classes_path, image_size, names, check, config.quantize, writer.inputs
    )


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


def _description(meta: dict, recipe: Recipe, inputs: str) -> dict:
    spec = recipe.spec
    return {
        "format": MODEL_FORMAT,
        "format_version": 1,
        "class_names": list(recipe.class_names),
        "input": f"RGB pixels (n, {spec.image_size}, {spec.image_size}, 3), {inputs} in [0, 255]",
        "output": "class probabilities (n, k), in the order of class_names",
        "preprocessing": spec.to_dict(),
        "weights_id": recipe.weights_id,
        "cache_fingerprint": meta.get("cache_fingerprint"),
        "head_metrics": meta.get("metrics"),
    }


def check_pixels(config: ExportConfig, meta: dict, spec: PreprocessSpec) -> tuple[np.ndarray, str]:
    """uint8 pixels (n, s, s, 3) of the check images, decoded as ``spec`` says, and where they come from:
    ``config.check_images``, else the validation split of the cache the head was trained on. Images
    that cannot be read are left out; ExportError when none is left."""
    if config.check_images:
        paths, source = [p for p, reason in collect_images(config.check_images) if reason is None], "--check-images"
    else:
        paths, source = _validation_files(meta), "the validation split"
    decoded = [decode(path, spec) for path in paths]
    pixels = [d for d in decoded if not isinstance(d, str)]
    if not pixels:
        raise ExportError(f"none of the images of {source} could be read to check the model; pass --check-images")
    return np.stack(pixels), source


def _validation_files(meta: dict) -> list[Path]:
    """The images of the validation split of the cache the head was trained on, those still there."""
    cache_path = Path(str(meta.get("cache_path", "")))
    try:
        cache = read_cache(cache_path, with_vectors=False)
    except FeatcacheError:
        raise ExportError(
            f"export checks the model on the validation images of the head's cache, and {cache_path} cannot be "
            "read; pass --check-images with a folder of images"
        ) from None
    root = Path(cache.attrs["data_dir"])
    files = [root / cache.rows.path[i] for i in cache.split_indices("validation")]
    return [path for path in files if path.is_file()]


def predicted_probabilities(backbone_model, head_model, pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """What featcache predict gives for uint8 ``pixels``: the base on preprocessed pixels, then the head."""
    preprocess_input = preprocess_function(spec.preprocess)
    parts = []
    for batch in batched(pixels, CHECK_BATCH):
        vectors = np.asarray(backbone_model(preprocess_input(np.stack(batch).astype(np.float32)), training=False))
        parts.append(softmax(head_logits(head_model, vectors)))
    return np.concatenate(parts)


def _check(writer, written: Path, config: ExportConfig, pixels, expected, source: str) -> Check:
    """Run the written model by each way into it and compare with ``expected``; ExportError names the way
    furthest off. Float32 models pass within CHECK_TOLERANCE, quantized ones with QUANTIZED_AGREEMENT."""
    checks = [
        _compare(name, got, expected, writer.runtime, source) for name, got in _run(writer, written, config, pixels)
    ]
    worst = max(checks, key=lambda c: (-c.agreeing, np.nan_to_num(c.max_prob_diff, nan=np.inf)))
    if config.quantize == "none" and not worst.max_prob_diff <= CHECK_TOLERANCE:
        raise ExportError(
            f"the written model ({worst.way}) differs from featcache predict by {worst.max_prob_diff:.2e} on "
            f"{worst.images} images of {source}, so {config.out} was left as it was; report this with your "
            "TensorFlow and Keras versions"
        )
    if config.quantize != "none" and worst.agreement < QUANTIZED_AGREEMENT:
        raise ExportError(
            f"the written model ({config.quantize} quantization) gives featcache predict's class on {worst.agreeing} "
            f"of {worst.images} images of {source} ({worst.agreement:.1%}, needs {QUANTIZED_AGREEMENT:.0%}), so "
            f"{config.out} was left as it was; try --quantize float16 or none"
        )
    return worst


def _compare(name: str, got: np.ndarray, expected: np.ndarray, runtime: str, source: str) -> Check:
    agreeing = int(np.sum(got.argmax(axis=1) == expected.argmax(axis=1))) if got.shape == expected.shape else 0
    diff = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    return Check(runtime, name, source, len(expected), agreeing, diff)


def _run(writer, written: Path, config: ExportConfig, pixels: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(way in, probabilities float32 (n, k)) of the model at ``written`` on ``pixels``, run by its runtime."""
    try:
        ways = writer.open(written)
        return [
            (
                name,
                np.concatenate([np.asarray(run(np.stack(b)), dtype=np.float32) for b in batched(pixels, CHECK_BATCH)]),
            )
            for name, run in ways.items()
        ]
    except Exception as exc:  # every runtime raises its own types for a model it cannot load or run
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ExportError(
            f"the written model cannot be loaded back by {writer.runtime} ({reason}), so {config.out} was left as "
            "it was; report this with your TensorFlow and Keras versions"
        ) from None
