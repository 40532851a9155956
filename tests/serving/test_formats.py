"""export --format tflite and onnx: run by LiteRT and ONNX Runtime themselves, checked before they replace
anything, and the serve example of docs/deploy.md in a virtual environment without TensorFlow."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featcache.api import export, predict
from featcache.cli import main
from featcache.errors import ConfigError, ExportError
from featcache.images import PreprocessSpec, load_image
from featcache.serving import formats
from tests.support import write_head

DEPLOY_DOC = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


@pytest.fixture(scope="module")
def head(tiny_xception_cache, tmp_path_factory):
    return write_head(tmp_path_factory.mktemp("fhead") / "head", tiny_xception_cache, epochs=5)


@pytest.fixture(scope="module")
def tflite(head, tmp_path_factory):
    return export(head, tmp_path_factory.mktemp("tflite") / "model.tflite", format="tflite")


def validation_files(cache):
    return sorted((cache.parent / "data" / "validation").rglob("*.*"))


def pixels_of(files) -> np.ndarray:
    return np.stack([load_image(f, PreprocessSpec(image_size=71)) for f in files]).astype(np.float32)


def assert_same_as_predict(probs: np.ndarray, files, head) -> None:
    ours = predict(files, head, top_k=2)
    for row, p in zip(probs, ours.predictions, strict=True):
        assert p.top[0][0] == ["cat", "dog"][int(np.argmax(row))]
        np.testing.assert_allclose(sorted(row, reverse=True), [prob for _, prob in p.top], atol=1e-4)


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_tflite_runs_in_litert_and_gives_predicts_classes(tflite, head, tiny_xception_cache):
    from ai_edge_litert.interpreter import Interpreter

    files = validation_files(tiny_xception_cache)
    serve = Interpreter(model_path=str(tflite.out)).get_signature_runner("serve")
    assert_same_as_predict(serve(image=pixels_of(files))["output_0"], files, head)
    assert tflite.check.runtime == "LiteRT" and tflite.check.source == "the validation split"
    assert tflite.check.images == len(files) == tflite.check.agreeing and tflite.max_prob_diff <= 1e-4
    about = json.loads(tflite.classes_path.read_text())
    assert about["class_names"] == ["cat", "dog"] and about["input"] == "RGB pixels (n, 71, 71, 3), float32 in [0, 255]"


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_onnx_runs_in_onnx_runtime_with_its_classes_inside(head, tiny_xception_cache, tmp_path):
    import onnxruntime

    result = export(head, tmp_path / "model.onnx", format="onnx", check_images=[tiny_xception_cache.parent / "data"])
    session = onnxruntime.InferenceSession(str(result.out), providers=["CPUExecutionProvider"])
    files = validation_files(tiny_xception_cache)
    assert_same_as_predict(session.run(None, {"image": pixels_of(files)})[0], files, head)
    about = json.loads(session.get_modelmeta().custom_metadata_map["featcache.json"])
    assert about["class_names"] == ["cat", "dog"] and about["preprocessing"]["image_size"] == 71
    assert result.check.runtime == "ONNX Runtime" and result.check.source == "--check-images"
    assert result.check.images == 14 == result.check.agreeing  # every image of the data folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.classes.json", "model.onnx"]


@pytest.mark.slow
@pytest.mark.parametrize("quantize, ratio", [("dynamic", 0.3), ("float16", 0.6)])
def test_quantized_tflite_is_smaller_and_checked(head, tflite, tmp_path, quantize, ratio):
    args = ["export", "--head", str(head), "-o", str(tmp_path / "q.tflite"), "--format", "tflite"]
    out = CliRunner().invoke(main, [*args, "--quantize", quantize])
    assert out.exit_code == 0, out.output
    assert f"(tflite, {quantize} quantization; input (n, 71, 71, 3) float32 RGB pixels" in out.stdout
    assert re.search(
        r"checked: 4 images of the validation split through LiteRT: top-1 agrees .* on 4 \(100.0%\)", out.stdout
    )
    assert (tmp_path / "q.tflite").stat().st_size < ratio * tflite.out.stat().st_size


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_a_tflite_that_fails_the_check_is_not_left_at_out(head, tmp_path, monkeypatch):
    opened = formats.TFLiteFile.open
    monkeypatch.setattr(formats.TFLiteFile, "open", lambda self, path: {"LiteRT": reversed_classes(opened(self, path))})
    out = tmp_path / "model.tflite"
    out.write_bytes(b"the model shipped yesterday")
    result = CliRunner().invoke(main, ["export", "--head", str(head), "-o", str(out), "--format", "tflite"])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "the written model (LiteRT) differs from featcache predict" in result.output
    assert "on 4 images of the validation split" in result.output
    assert out.read_bytes() == b"the model shipped yesterday" and [p.name for p in tmp_path.iterdir()] == [out.name]


def reversed_classes(ways: dict):
    (run,) = ways.values()
    return lambda pixels: np.asarray(run(pixels))[:, ::-1]


def test_bad_options_are_refused_before_any_work(head, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"must end in \.tflite for --format tflite"):
        export(head, tmp_path / "model.keras", format="tflite")
    with pytest.raises(ConfigError, match="--quantize dynamic is for --format tflite"):
        export(head, tmp_path / "model.onnx", format="onnx", quantize="dynamic")
    with pytest.raises(ConfigError, match="quantize must be one of none, dynamic, float16; got 'int4'"):
        export(head, tmp_path / "model.tflite", format="tflite", quantize="int4")
    find_spec = formats.importlib.util.find_spec
    monkeypatch.setattr(formats.importlib.util, "find_spec", lambda m: None if m == "onnxruntime" else find_spec(m))
    with pytest.raises(
        ConfigError, match=r"needs onnxruntime, which is not installed; pip install 'featcache\[onnx\]'"
    ):
        export(head, tmp_path / "model.onnx", format="onnx")
    assert list(tmp_path.iterdir()) == []


def test_without_the_heads_cache_check_images_are_asked_for(head, tmp_path):
    moved = tmp_path / "head"
    moved.mkdir()
    for name in ("head.keras", "head.json"):
        (moved / name).write_bytes((head / name).read_bytes())
    meta = json.loads((moved / "head.json").read_text())
    (moved / "head.json").write_text(json.dumps(meta | {"cache_path": str(tmp_path / "gone.h5")}))
    with pytest.raises(ExportError, match="cannot be read; pass --check-images with a folder of images"):
        export(moved, tmp_path / "model.keras")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.jpg").write_text("not an image")
    with pytest.raises(ExportError, match="none of the images of --check-images could be read"):
        export(moved, tmp_path / "model.keras", check_images=[tmp_path / "notes"])
    args = ["export", "--head", str(moved), "-o", str(tmp_path / "m.tflite"), "--format", "tflite"]
    result = CliRunner().invoke(main, [*args, "--check-images", str(tmp_path / "notes")])
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "none of the images of --check-images could be read to check the model" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head", "notes"]


def test_featcache_imports_no_serving_runtime():
    code = (
        "import sys, featcache.api, featcache.cli, featcache.serving.exporter\n"
        "loaded = [m for m in ('tf2onnx', 'onnxruntime', 'ai_edge_litert', 'onnx') if m in sys.modules]\n"
        "assert not loaded, loaded"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def serve_example() -> str:
    """The Python block of docs/deploy.md that loads a .tflite with LiteRT."""
    blocks = re.findall(r"```python\n(.*?)```", DEPLOY_DOC.read_text(), flags=re.S)
    (script,) = [b for b in blocks if "ai_edge_litert" in b]
    return script


@pytest.mark.slow
def test_the_serve_example_classifies_with_litert_numpy_and_pillow_only(tflite, head, tiny_xception_cache, tmp_path):
    script = serve_example()
    assert len([line for line in script.splitlines() if line.strip()]) <= 22
    (tmp_path / "serve.py").write_text(script)
    venv.create(tmp_path / "env", with_pip=True)
    python = str(tmp_path / "env" / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    install = [python, "-m", "pip", "install", "--quiet", "ai-edge-litert", "numpy", "pillow"]
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], env=env, capture_output=True, text=True)
    assert not {p["name"].lower() for p in json.loads(listed.stdout)} & {"tensorflow", "keras", "featcache"}
    files = validation_files(tiny_xception_cache)
    expected = predict(files, head, top_k=2).predictions
    for path, p in zip(files, expected, strict=True):
        args = [python, "-I", str(tmp_path / "serve.py"), str(tflite.out), str(path)]
        done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        printed = [line.split() for line in done.stdout.splitlines()]
        assert [name for name, _ in printed] == [name for name, _ in p.top]
        np.testing.assert_allclose([float(prob) for _, prob in printed], [prob for _, prob in p.top], atol=2e-4)
