"""Train/serve parity on the real clothing data with the real weights: predict, export and verify (../shared)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from featcache.api import export, extract, predict, train_head, verify
from featcache.cache.layout import read_cache
from featcache.training.head_files import head_logits, load_head
from tests.support import REAL_DATA, REAL_WEIGHTS, require_real, with_vectors_of

pytestmark = pytest.mark.real

# A user's serving code: Pillow and plain Keras, no featcache anywhere in the process.
PLAIN_SERVING = """
import json, sys, zipfile
import numpy as np, keras
from PIL import Image, ImageOps

model_path, list_path, out_path = sys.argv[1:]
model = keras.saving.load_model(model_path, safe_mode=True)
about = json.loads(zipfile.ZipFile(model_path).read("featcache.json"))
names, size = about["class_names"], model.input_shape[1]
resample = Image.Resampling[about["preprocessing"]["interpolation"].upper()]
exif_transpose = about["preprocessing"]["exif_transpose"]

def pixels(path):
    with Image.open(path) as im:
        im = (ImageOps.exif_transpose(im) if exif_transpose else im).convert("RGB")
        return np.asarray(im.resize((size, size), resample), dtype=np.uint8)

files = json.load(open(list_path))
probs = np.concatenate([
    model.predict(np.stack([pixels(f) for f in files[i : i + 64]]), verbose=0) for i in range(0, len(files), 64)
])
assert not any(name.startswith("featcache") for name in sys.modules)
json.dump([names[i] for i in probs.argmax(axis=1)], open(out_path, "w"))
"""


@pytest.fixture(scope="module")
def trained(real_cache, tmp_path_factory):
    """A head made by train-head on the cached vectors, and what it says about the cached validation vectors."""
    head = tmp_path_factory.mktemp("real_head") / "head"
    train_head(real_cache, head, epochs=10)
    cache = read_cache(real_cache)
    val = cache.split_indices("validation")
    model, _ = load_head(head)
    logits = head_logits(model, cache.features[val])
    files = [REAL_DATA / cache.rows.path[i] for i in val]
    labels = [cache.class_names[cache.rows.label[i]] for i in val]
    return head, files, labels, logits, cache.class_names


@pytest.fixture(scope="module")
def predicted(trained):
    head, files, *_ = trained
    return predict(files, head, batch_size=32)


def test_predict_gives_the_cached_vectors_classes_on_every_validation_image(trained, predicted):
    _, files, _, logits, names = trained
    assert [p.path for p in predicted.predictions] == files and not predicted.failed
    ours = np.stack([p.logits for p in predicted.predictions])
    assert [p.label for p in predicted.predictions] == [names[i] for i in logits.argmax(axis=1)]
    assert np.abs(ours - logits).max() < 1e-3


def test_exported_model_in_plain_keras_gives_the_same_classes_and_accuracy(trained, predicted, tmp_path):
    head, files, labels, logits, names = trained
    result = export(head, tmp_path / "model.keras")
    (tmp_path / "files.json").write_text(json.dumps([str(f) for f in files]))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, "-I", "-c", PLAIN_SERVING, str(result.out), "files.json", "classes.json"]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    served = json.loads((tmp_path / "classes.json").read_text())
    assert served == [p.label for p in predicted.predictions]
    head_accuracy = np.mean([names[i] == y for i, y in zip(logits.argmax(axis=1), labels, strict=True)])
    served_accuracy = np.mean([s == y for s, y in zip(served, labels, strict=True)])
    assert served_accuracy == head_accuracy > 0.6


def served_probabilities(path, files) -> np.ndarray:
    """Probabilities of the .tflite or .onnx at ``path`` for ``files``, run by LiteRT or ONNX Runtime."""
    from featcache.images import PreprocessSpec, load_image

    pixels = np.stack([load_image(f, PreprocessSpec(image_size=150)) for f in files]).astype(np.float32)
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        serve = Interpreter(model_path=str(path)).get_signature_runner("serve")
        return np.concatenate([serve(image=pixels[i : i + 32])["output_0"] for i in range(0, len(pixels), 32)])
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"image": pixels[i : i + 32]})[0] for i in range(0, len(pixels), 32)])


@pytest.mark.parametrize(
    "format, quantize, agreement",
    [("tflite", "none", 1.0), ("tflite", "dynamic", 0.99), ("tflite", "float16", 0.99), ("onnx", "none", 1.0)],
)
def test_tflite_and_onnx_give_predicts_classes_in_their_own_runtime(
    trained, predicted, tmp_path, format, quantize, agreement
):
    head, files, labels, _, names = trained
    out = tmp_path / f"model.{format}"
    result = export(head, out, format=format, quantize=quantize)
    assert result.check.images == len(files) and result.check.agreement >= agreement
    served = [names[i] for i in served_probabilities(out, files).argmax(axis=1)]
    ours = [p.label for p in predicted.predictions]
    assert np.mean([s == o for s, o in zip(served, ours, strict=True)]) >= agreement
    if quantize == "none":
        assert served == ours and result.max_prob_diff <= 1e-4
    served_accuracy = np.mean([s == y for s, y in zip(served, labels, strict=True)])
    assert abs(served_accuracy - np.mean([o == y for o, y in zip(ours, labels, strict=True)])) <= 1 - agreement


def test_verify_passes_on_a_fresh_real_cache(real_cache):
    result = verify(real_cache, sample=32)
    assert result.passed and result.compared == 32
    assert result.max_abs_diff <= 1e-4 and result.min_cosine > 0.99999


@pytest.fixture(scope="module")
def few_real_images(tmp_path_factory):
    """Six real images (two of three classes), small enough to extract several times."""
    require_real()
    root = tmp_path_factory.mktemp("few_real") / "data"
    for label in ("dress", "pants", "shoes"):
        for src in sorted((REAL_DATA / "train" / label).iterdir())[:2]:
            (root / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(src, root / label / src.name)
    return root


def test_verify_fails_on_vectors_of_other_weights(few_real_images, tmp_path):
    cache = tmp_path / "random.h5"
    extract(few_real_images, cache, weights="none", image_size=150, val_fraction=0.0, test_fraction=0.0)
    result = verify(cache, weights=str(REAL_WEIGHTS))
    assert not result.passed and result.max_abs_diff > 1e-2
    assert result.causes[0].startswith("weights file:") and "random-init:seed=0" in result.causes[0]


def test_verify_fails_on_vectors_of_another_image_size(few_real_images, tmp_path):
    options = {"weights": str(REAL_WEIGHTS), "val_fraction": 0.0, "test_fraction": 0.0}
    extract(few_real_images, tmp_path / "150.h5", image_size=150, **options)
    extract(few_real_images, tmp_path / "180.h5", image_size=180, **options)
    assert verify(tmp_path / "150.h5").passed
    tampered = with_vectors_of(tmp_path / "150.h5", tmp_path / "180.h5", tmp_path / "tampered.h5")
    result = verify(tampered)
    assert not result.passed and result.max_abs_diff > 1e-2
    assert result.causes[0].startswith("resize or decoding") and "150x150" in result.causes[0]
