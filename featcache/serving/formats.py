"""The files export writes, one class per format: how each is written from the Keras model and run back by
the runtime that serves it (Keras, TensorFlow, LiteRT, ONNX Runtime).

Every format has the same three members: ``runtime`` (who runs it), ``write(model, path, image_size,
description)`` and ``open(path)``, which returns each way into the written model as a function from
uint8 pixels (n, s, s, 3) to float32 probabilities (n, k). ``.tflite`` and ``.onnx`` files are
converted from the SavedModel's ``serve`` endpoint (float32 pixels in [0, 255]), written to a
temporary folder beside them and removed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np

from featcache.errors import ConfigError

DESCRIPTION = "featcache.json"
#: what each format needs beyond featcache's own packages, and the extra that installs it
NEEDS = {"tflite": (("ai_edge_litert",), "tflite"), "onnx": (("tf2onnx", "onnxruntime"), "onnx")}


class KerasFile:
    """A ``.keras`` file with the description inside the archive; uint8 or float32 pixels in."""

    runtime, inputs = "Keras", "uint8 or float"

    def write(self, model, path: Path, image_size: int, description: dict) -> None:
        model.save(path)
        with zipfile.ZipFile(path, "a") as archive:
            archive.writestr(DESCRIPTION, json.dumps(description, indent=2))

    def open(self, path: Path) -> dict:
        import keras

        loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
        return {
            "uint8 pixels": lambda pixels: loaded.predict(pixels, verbose=0),
            "float32 pixels": lambda pixels: loaded.predict(pixels.astype(np.float32), verbose=0),
        }


class SavedModelFolder:
    """A SavedModel folder with endpoints ``serve`` (float32 pixels, the default) and ``serve_uint8``."""

    runtime, inputs = "TensorFlow", "uint8 or float"

    def write(self, model, path: Path, image_size: int, description: dict) -> None:
        import keras
        import tensorflow as tf

        shape = [None, image_size, image_size, 3]
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec(shape, tf.float32, name="image")],
        )
        archive.add_endpoint(
            "serve_uint8",
            lambda x: model(tf.cast(x, tf.float32), training=False),
            input_signature=[tf.TensorSpec(shape, tf.uint8, name="image")],
        )
        archive.write_out(str(path), verbose=False)
        (path / DESCRIPTION).write_text(json.dumps(description, indent=2), encoding="utf-8")

    def open(self, path: Path) -> dict:
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))
        return {
            "serve": lambda pixels: loaded.serve(tf.constant(pixels, tf.float32)),
            "serve_uint8": lambda pixels: loaded.serve_uint8(tf.constant(pixels)),
        }


@contextlib.contextmanager
def saved_model_beside(model, path: Path, image_size: int, description: dict):
    """The model as a SavedModel in a temporary folder beside ``path``, removed afterwards."""
    folder = path.with_name(f".{path.stem}.saved_model-{os.getpid()}")
    try:
        SavedModelFolder().write(model, folder, image_size, description)
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class TFLiteFile:
    """A ``.tflite`` file made by TensorFlow's converter, run by LiteRT (``ai-edge-litert``); signature
    ``serve``: input ``image`` float32 pixels in [0, 255], output ``output_0`` probabilities.

    ``quantize``: ``none`` keeps float32 weights; ``dynamic`` stores them as int8 (dynamic-range
    quantization); ``float16`` stores them as float16.
    """

    runtime, inputs = "LiteRT", "float32"

    def __init__(self, quantize: str = "none"):
        self.quantize = quantize

    def write(self, model, path: Path, image_size: int, description: dict) -> None:
        import tensorflow as tf

        with saved_model_beside(model, path, image_size, description) as folder:
            converter = tf.lite.TFLiteConverter.from_saved_model(str(folder), signature_keys=["serve"])
            if self.quantize != "none":
                converter.optimizations = [tf.lite.Optimize.DEFAULT]
            if self.quantize == "float16":
                converter.target_spec.supported_types = [tf.float16]
            path.write_bytes(converter.convert())

    def open(self, path: Path) -> dict:
        from ai_edge_litert.interpreter import Interpreter

        serve = Interpreter(model_path=str(path)).get_signature_runner("serve")
        return {"LiteRT": lambda pixels: serve(image=pixels.astype(np.float32))["output_0"]}


class OnnxFile:
    """An ``.onnx`` file made by tf2onnx, run by ONNX Runtime: input ``image`` float32 pixels in
    [0, 255], one output of probabilities; the description is the model's metadata ``featcache.json``."""

    runtime, inputs = "ONNX Runtime", "float32"

    def write(self, model, path: Path, image_size: int, description: dict) -> None:
        import tensorflow as tf
        import tf2onnx

        with saved_model_beside(model, path, image_size, description) as folder:
            loaded = tf.saved_model.load(str(folder))  # held while converting: serve uses its variables
            spec = [tf.TensorSpec([None, image_size, image_size, 3], tf.float32, name="image")]
            proto, _ = tf2onnx.convert.from_function(loaded.serve, input_signature=spec)
        entry = proto.metadata_props.add()
        entry.key, entry.value = DESCRIPTION, json.dumps(description)
        path.write_bytes(proto.SerializeToString())

    def open(self, path: Path) -> dict:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return {"ONNX Runtime": lambda pixels: session.run(None, {"image": pixels.astype(np.float32)})[0]}


def format_for(name: str, quantize: str = "none"):
    """The writer of format ``name``; ConfigError, before any work, when its packages are not installed."""
    modules, extra = NEEDS.get(name, ((), ""))
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"--format {name} needs {', '.join(missing)}, which is not installed; pip install 'featcache[{extra}]'"
        )
    if name == "tflite":
        return TFLiteFile(quantize)
    return {"keras": KerasFile, "saved_model": SavedModelFolder, "onnx": OnnxFile}[name]()
