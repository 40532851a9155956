"""--precision: float32 stays the exact default, bfloat16 runs on OpenVINO, and precisions never mix in a cache."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import featcache.backbones.openvino
from featcache.api import extract
from featcache.backbones import backbone_for
from featcache.backbones.openvino import OpenVinoBackbone, importlib
from featcache.backbones.xception import XceptionBackbone
from featcache.cache.layout import read_cache
from featcache.cli import main
from featcache.config import ExtractConfig
from featcache.errors import ConfigError, FingerprintMismatch
from tests.support import REAL_DATA, REAL_WEIGHTS, REQUIRE_REAL, make_split_dataset, require_real

#: OpenVINO float32 against TensorFlow on the real weights: the largest difference of any element of the
#: pooled vectors (elements reach about 5). Measured 9.2e-6 on the 64 images of the real test below and
#: 1.4e-5 on all 341 validation images of the clothing dataset, at 150 px; the README states this figure.
F32_AGREEMENT = 2e-5


def require_openvino() -> None:
    """Skip a test of the OpenVINO runtime where OpenVINO is not installed, or fail it where
    FEATCACHE_REQUIRE_REAL is set (CI installs the dev extra, which includes it)."""
    if importlib.util.find_spec("openvino") is not None:
        return
    message = "openvino is not installed (pip install -e '.[dev]')"
    if REQUIRE_REAL:
        pytest.fail(f"{message}, and FEATCACHE_REQUIRE_REAL is set")
    pytest.skip(message)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_unknown_precision_names_the_allowed_ones(tmp_path):
    with pytest.raises(ConfigError, match="precision must be one of float32, bfloat16; got 'float16'"):
        ExtractConfig(data_dir=tmp_path, precision="float16")


def test_runtime_defaults_to_the_precision_and_refuses_bfloat16_on_tensorflow(tmp_path):
    assert ExtractConfig(data_dir=tmp_path).runtime == "tensorflow"
    assert ExtractConfig(data_dir=tmp_path, precision="bfloat16").runtime == "openvino"
    assert ExtractConfig(data_dir=tmp_path, runtime="openvino").precision == "float32"
    with pytest.raises(ConfigError, match="precision bfloat16 runs on the openvino runtime"):
        ExtractConfig(data_dir=tmp_path, precision="bfloat16", runtime="tensorflow")
    with pytest.raises(ConfigError, match="runtime must be one of tensorflow, openvino; got 'onnx'"):
        ExtractConfig(data_dir=tmp_path, runtime="onnx")


def test_bfloat16_without_openvino_is_one_line_naming_the_install(split_data, tmp_path, monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    out = tmp_path / "c.h5"
    args = ["extract", str(split_data), "-o", str(out), "--weights", "none", "--precision", "bfloat16", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    message = result.output.strip()
    assert "\n" not in message and "Traceback" not in message
    assert "pip install 'featcache[openvino]'" in message
    assert not out.exists()


def test_float32_keeps_the_tensorflow_backbone_and_its_identity():
    backbone = backbone_for("none", 150, "float32")
    assert type(backbone) is XceptionBackbone
    assert backbone.identity() == {
        "backbone": "keras.applications.Xception(include_top=False)",
        "pooling": "GlobalAveragePooling2D",
        "weights_id": "random-init:seed=0",
        "feature_dim": 2048,
    }


def test_openvino_identity_names_runtime_and_arithmetic_without_importing_it():
    identity = OpenVinoBackbone(XceptionBackbone("none", 150)).identity()
    assert identity["runtime"] == "openvino" and identity["inference_precision"] == "bf16"
    assert identity["weights_id"] == "random-init:seed=0"
    assert OpenVinoBackbone(XceptionBackbone("none", 150), "float32").identity()["inference_precision"] == "f32"


def test_precisions_never_mix_in_one_cache(split_data, tmp_path, fake_backbone):
    out = tmp_path / "c.h5"
    extract(split_data, out, weights="none", backbone=fake_backbone)
    with pytest.raises(FingerprintMismatch, match="precision: 'float32' -> 'bfloat16'"):
        extract(split_data, out, weights="none", precision="bfloat16", backbone=fake_backbone)
    result = extract(split_data, out, weights="none", precision="bfloat16", overwrite=True, backbone=fake_backbone)
    assert result.computed == result.rows
    assert read_cache(out, with_vectors=False).attrs["precision"] == "bfloat16"


@pytest.fixture(scope="session")
def openvino_home(tmp_path_factory):
    """One conversion cache for the session, so each model is converted once."""
    require_openvino()
    return tmp_path_factory.mktemp("featcache_home")


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_bfloat16_extract_runs_openvino_and_records_it(tmp_path, openvino_home, monkeypatch):
    monkeypatch.setenv("FEATCACHE_HOME", str(openvino_home))
    data = make_split_dataset(tmp_path / "data", counts={"train": 3, "validation": 1, "test": 1})
    out = tmp_path / "bf16.h5"
    result = extract(data, out, weights="none", image_size=71, batch_size=4, precision="bfloat16")
    cache = read_cache(out)
    fields = json.loads(cache.attrs["fingerprint_fields"])
    assert result.computed == 10 and cache.features.shape == (10, 2048)
    assert (fields["precision"], fields["runtime"], fields["inference_precision"]) == ("bfloat16", "openvino", "bf16")
    reference = XceptionBackbone("none", 71).build()
    from featcache.images import PreprocessSpec, load_image

    pixels = np.stack([load_image(data / p, PreprocessSpec(image_size=71)) for p in cache.rows.path])
    expected = reference(pixels)
    assert _cosines(cache.features, expected).min() > 0.99
    fp32 = backbone_for("none", 71, "float32", "openvino").build()(pixels)
    # random weights give vectors of about 1e-4: their difference is measured against their size (7e-7 of it)
    assert np.abs(fp32 - expected).max() < 1e-5 * np.abs(expected).max()


def test_converted_model_is_cached_and_loads_without_tensorflow(openvino_home):
    OpenVinoBackbone(XceptionBackbone("none", 71), cache_dir=openvino_home / "openvino").converted()
    script = (
        "import sys, numpy as np\n"
        "from featcache.backbones.xception import XceptionBackbone\n"
        "from featcache.backbones.openvino import OpenVinoBackbone\n"
        f"b = OpenVinoBackbone(XceptionBackbone('none', 71), cache_dir=r'{openvino_home / 'openvino'}')\n"
        "v = b.build()(np.zeros((2, 71, 71, 3), np.uint8))\n"
        "print(v.shape, 'tensorflow' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[0] == "(2, 2048) False"


@pytest.fixture(scope="module")
def real_float32() -> tuple[np.ndarray, np.ndarray]:
    """64 validation images of the clothing dataset (every fifth) as 150 px uint8 pixels, and their vectors
    by TensorFlow in float32 with the real weights."""
    require_real()
    from featcache.images import PreprocessSpec, load_image

    files = sorted((REAL_DATA / "validation").rglob("*.jpg"))[::5][:64]
    pixels = np.stack([load_image(f, PreprocessSpec()) for f in files])
    return pixels, backbone_for(str(REAL_WEIGHTS), 150, "float32").build()(pixels)


@pytest.mark.real
def test_bfloat16_vectors_of_real_images_are_close_to_float32(real_float32, openvino_home, monkeypatch):
    require_real()
    monkeypatch.setenv("FEATCACHE_HOME", str(openvino_home))
    pixels, fp32 = real_float32
    bf16 = backbone_for(str(REAL_WEIGHTS), 150, "bfloat16").build()(pixels)
    cos = _cosines(bf16, fp32)
    assert len(cos) == 64
    assert cos.mean() >= 0.9995 and np.percentile(cos, 1) >= 0.999 and cos.min() >= 0.995, cos


@pytest.mark.real
def test_float32_on_openvino_gives_the_vectors_of_tensorflow_within_the_stated_figure(
    real_float32, openvino_home, monkeypatch
):
    require_real()
    monkeypatch.setenv("FEATCACHE_HOME", str(openvino_home))
    pixels, tensorflow = real_float32
    openvino = backbone_for(str(REAL_WEIGHTS), 150, "float32", "openvino").build()(pixels)
    difference = np.abs(openvino - tensorflow).max()
    assert len(pixels) == 64 and np.abs(tensorflow).max() > 1  # the real weights' vectors, not random ones
    assert difference <= F32_AGREEMENT, f"OpenVINO float32 differs from TensorFlow by up to {difference:.2e}"


def test_a_failed_conversion_is_one_line_naming_the_way_back(tmp_path, monkeypatch):
    require_openvino()

    def broken(base, folder):
        raise RuntimeError("Cannot convert op XYZ\nlong trace")

    monkeypatch.setattr(featcache.backbones.openvino, "_convert", broken)
    backbone = OpenVinoBackbone(XceptionBackbone("none", 71), cache_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"could not convert the Keras model \(Cannot convert op XYZ\); use"):
        backbone.converted()
