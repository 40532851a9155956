"""export: one model from raw pixels to probabilities, loadable without featcache, on tiny synthetic data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from featcache.api import export, predict
from featcache.backbones import backbone_for
from featcache.cli import main
from featcache.errors import ConfigError, ExportError, WeightsError
from featcache.images import PreprocessSpec, load_image
from tests.support import write_head

# Runs in a fresh interpreter: plain Keras, no featcache on the path or in sys.modules.
PLAIN_KERAS = """
import json, sys, numpy as np, keras
model = keras.saving.load_model(sys.argv[1], safe_mode=True)
probs = model.predict(np.load(sys.argv[2]), verbose=0)
assert not any(name.startswith("featcache") for name in sys.modules)
np.save(sys.argv[3], probs)
"""


@pytest.fixture(scope="module")
def head(tiny_xception_cache, tmp_path_factory):
    return write_head(tmp_path_factory.mktemp("ehead") / "head", tiny_xception_cache, epochs=5)


@pytest.fixture(scope="module")
def exported(head, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model.keras"
    return export(head, out)


def validation_files(cache):
    return sorted((cache.parent / "data" / "validation").rglob("*.*"))


def run_plain_keras(model_path, pixels, tmp_path) -> np.ndarray:
    np.save(tmp_path / "pixels.npy", pixels)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    files = [str(model_path), str(tmp_path / "pixels.npy"), str(tmp_path / "p.npy")]
    args = [sys.executable, "-I", "-c", PLAIN_KERAS, *files]
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return np.load(tmp_path / "p.npy")


def test_exported_model_matches_predict_without_featcache(exported, head, tiny_xception_cache, tmp_path):
    files = validation_files(tiny_xception_cache)
    spec = PreprocessSpec(image_size=71)
    pixels = np.stack([load_image(f, spec) for f in files])  # uint8, as a user's decoder gives
    probs = run_plain_keras(exported.out, pixels, tmp_path)
    ours = predict(files, head)
    names = exported.class_names
    for row, p in zip(probs, ours.predictions, strict=True):
        assert names[int(np.argmax(row))] == p.label
        np.testing.assert_allclose(sorted(row, reverse=True), [prob for _, prob in p.top], atol=1e-4)


def test_class_names_travel_inside_the_model_and_beside_it(exported):
    with zipfile.ZipFile(exported.out) as archive:
        inside = json.loads(archive.read("featcache.json"))
    beside = json.loads(exported.classes_path.read_text())
    assert inside["class_names"] == beside["class_names"] == ["cat", "dog"] == exported.class_names
    assert exported.classes_path.name == "model.classes.json"
    assert inside["preprocessing"]["image_size"] == 71 and exported.max_prob_diff <= 1e-4


def test_float_pixels_give_the_same_probabilities(exported):
    import keras

    model = keras.saving.load_model(exported.out, safe_mode=True)
    pixels = np.random.default_rng(1).integers(0, 256, (2, 71, 71, 3), dtype=np.uint8)
    np.testing.assert_allclose(
        model.predict(pixels, verbose=0), model.predict(pixels.astype(np.float32), verbose=0), atol=1e-6
    )


@pytest.mark.slow
def test_saved_model_serves_uint8_and_float(head, tmp_path):
    import tensorflow as tf

    result = export(head, tmp_path / "serving", format="saved_model")
    assert (tmp_path / "serving" / "featcache.json").is_file()
    assert result.classes_path == tmp_path / "serving.classes.json"
    served = tf.saved_model.load(str(tmp_path / "serving"))
    pixels = np.random.default_rng(2).integers(0, 256, (2, 71, 71, 3), dtype=np.uint8)
    from_uint8 = served.serve_uint8(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(from_uint8, served.serve(tf.constant(pixels, tf.float32)).numpy(), atol=1e-6)


def test_export_refuses_other_weights_and_bad_names(head, tmp_path):
    other = tmp_path / "other.weights.h5"
    other.write_bytes(b"other")
    with pytest.raises(WeightsError):
        export(head, tmp_path / "m.keras", weights=str(other))
    with pytest.raises(ConfigError, match="must end in .keras"):
        export(head, tmp_path / "model.h5")
    (tmp_path / "folder.keras").mkdir()
    with pytest.raises(ConfigError, match="is a folder, where export writes a file"):
        export(head, tmp_path / "folder.keras")


def test_cli_export_prints_what_it_wrote(head, tmp_path):
    out = CliRunner().invoke(main, ["export", "--head", str(head), "--out", str(tmp_path / "m.keras")])
    assert out.exit_code == 0, out.output
    assert "input (n, 71, 71, 3)" in out.stdout and "m.classes.json (cat, dog)" in out.stdout


class ForgetfulBackbone:
    """The head's own backbone (random Xception, 71 px) with a layer that loses its offset when saved: the
    model it gives works, but the one written and loaded back computes other vectors."""

    def __init__(self):
        self.real = backbone_for("none", 71)

    def identity(self) -> dict:
        return self.real.identity()

    def build_model(self):
        import keras

        @keras.saving.register_keras_serializable(package="featcache_tests")
        class Shift(keras.layers.Layer):
            def __init__(self, offset=0.0, **kwargs):
                super().__init__(**kwargs)
                self.offset = offset

            def call(self, x):
                return x + self.offset

            def get_config(self):  # forgets the offset: a model loaded back adds 0
                return {k: v for k, v in super().get_config().items() if k != "offset"}

        base = self.real.build_model()
        pixels = keras.Input(base.input_shape[1:])
        return keras.Model(pixels, Shift(1.0)(base(pixels)))


def wrong_endpoint(monkeypatch, name: str) -> None:
    """SavedModel endpoint ``name`` written with its classes in reverse order (Keras' export archive patched)."""
    import keras
    import tensorflow as tf

    archive = type(keras.export.ExportArchive())  # the backend's class, which ExportArchive() returns
    add_endpoint = archive.add_endpoint

    def reversed_classes(self, endpoint, fn, input_signature=None, **kwargs):
        if endpoint == name:
            fn = (lambda right: lambda x: tf.reverse(right(x), axis=[-1]))(fn)
        return add_endpoint(self, endpoint, fn, input_signature, **kwargs)

    monkeypatch.setattr(archive, "add_endpoint", reversed_classes)


def test_a_model_that_fails_the_check_is_not_left_at_out(head, tmp_path):
    out, beside = tmp_path / "model.keras", tmp_path / "model.classes.json"
    out.write_bytes(b"the model shipped yesterday")
    beside.write_text("yesterday's classes")
    with pytest.raises(ExportError, match="differs from featcache predict"):
        export(head, out, backbone=ForgetfulBackbone())
    assert out.read_bytes() == b"the model shipped yesterday" and beside.read_text() == "yesterday's classes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.classes.json", "model.keras"]  # no temporary left
    out.unlink(), beside.unlink()
    with pytest.raises(ExportError):
        export(head, out, backbone=ForgetfulBackbone())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.parametrize("endpoint", ["serve", "serve_uint8"])
def test_each_saved_model_endpoint_is_checked(head, tmp_path, monkeypatch, endpoint):
    wrong_endpoint(monkeypatch, endpoint)
    args = ["export", "--head", str(head), "--out", str(tmp_path / "serving"), "--format", "saved_model"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert f"the written model ({endpoint}) differs from featcache predict" in result.output
    assert list(tmp_path.iterdir()) == []  # no folder, no classes.json, no temporary


@pytest.mark.slow
def test_an_export_that_passes_replaces_the_last_one(head, tmp_path):
    import tensorflow as tf

    out = tmp_path / "serving"
    out.mkdir()
    (out / "saved_model.pb").write_bytes(b"an older SavedModel")
    result = export(head, out, format="saved_model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["serving", "serving.classes.json"]
    assert tf.saved_model.load(str(out)).serve_uint8 is not None and result.max_prob_diff <= 1e-4
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    with pytest.raises(ConfigError, match="not a SavedModel"):
        export(head, not_a_model, format="saved_model")
