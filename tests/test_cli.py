"""End-to-end command line: extract and info, their summaries, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import h5py
import pytest
from click.testing import CliRunner

from featcache.cli import main
from tests.support import make_split_dataset


def _invoke(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], env=env)


def _assert_one_line_error(result, *fragments):
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    error = result.output.strip().splitlines()[-1]
    assert error.startswith("Error: ")
    for fragment in fragments:
        assert fragment in error, error


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_split_dataset(root / "data", counts={"train": 3, "validation": 1, "test": 1})
    out = root / "c.h5"
    result = _invoke("extract", data, "-o", out, "--weights", "none", "--image-size", "71", "-q")
    assert result.exit_code == 0, result.output
    return data, out, result.output


def test_extract_prints_a_summary(tiny_cache):
    _, out, output = tiny_cache
    assert f"cache: {out}  (10 rows, 2 classes)" in output
    assert "train            6   cat 3, dog 3" in output
    assert "computed 10, reused 0, quarantined 0" in output


def test_rerun_reports_everything_reused(tiny_cache):
    data, out, _ = tiny_cache
    result = _invoke("extract", data, "-o", out, "--weights", "none", "--image-size", "71", "-q")
    assert result.exit_code == 0 and "computed 0, reused 10" in result.output


def test_info_shows_counts_provenance_and_quarantine(tiny_cache):
    _, out, _ = tiny_cache
    result = _invoke("info", out)
    assert result.exit_code == 0, result.output
    assert "10 rows, 2 classes" in result.output and "image_size: 71" in result.output
    assert "quarantine: 0 file(s)" in result.output
    as_json = json.loads(_invoke("info", out, "--json").output)
    assert as_json["per_split"] == {"train": 6, "validation": 2, "test": 2}


def test_no_exif_transpose_is_part_of_the_fingerprint(tiny_cache, tmp_path):
    data, out, _ = tiny_cache
    result = _invoke("extract", data, "-o", out, "--weights", "none", "--image-size", "71", "--no-exif-transpose")
    _assert_one_line_error(result, "preprocessing.exif_transpose: True -> False", "--overwrite")


def _exif_rotated_dataset(root):
    from PIL import Image

    data = make_split_dataset(root, counts={"train": 2, "validation": 1})
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise
    photo = Image.new("RGB", (71, 71), (200, 40, 40))
    photo.paste((255, 255, 255), (0, 0, 20, 71))
    photo.save(data / "train" / "cat" / "portrait.jpg", exif=exif, quality=95)
    return data


def test_a_cache_made_with_no_exif_transpose_replays_without_it(tmp_path):
    import h5py

    data, out = _exif_rotated_dataset(tmp_path / "data"), tmp_path / "keras_pixels.h5"
    args = ["--weights", "none", "--image-size", "71", "-q", "--no-exif-transpose"]
    assert _invoke("extract", data, "-o", out, *args).exit_code == 0
    recorded = json.loads(_invoke("info", out, "--json").output)["provenance"]["preprocessing"]
    assert json.loads(recorded)["exif_transpose"] is False
    assert _invoke("verify", out, "--sample", "100").exit_code == 0
    with h5py.File(out, "r+") as h5:  # the same vectors, now claiming the rotation was applied: verify notices
        h5.attrs["preprocessing"] = recorded.replace('"exif_transpose": false', '"exif_transpose": true')
    assert _invoke("verify", out, "--sample", "100").exit_code == 1


def test_other_settings_on_an_existing_cache_are_refused(tiny_cache):
    data, out, _ = tiny_cache
    result = _invoke("extract", data, "-o", out, "--weights", "none", "--image-size", "72", "-q")
    _assert_one_line_error(result, "image_size: 71 -> 72", "--overwrite", "-o")


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["--image-size", "70"], ["image_size must be an integer >= 71"]),
        (["--batch-size", "0"], ["batch_size must be an integer >= 1"]),
        (["--val-fraction", "0.6", "--test-fraction", "0.5"], ["val_fraction + test_fraction"]),
        (["--weights", "/no/such/weights.h5"], ["weights file /no/such/weights.h5 does not exist", "--weights"]),
    ],
)
def test_bad_options_are_one_line_errors(tiny_cache, tmp_path, args, fragments):
    data, _, _ = tiny_cache
    result = _invoke("extract", data, "-o", tmp_path / "x.h5", *args)
    _assert_one_line_error(result, *fragments)
    assert not (tmp_path / "x.h5").exists()


def test_missing_data_folder(tmp_path):
    _assert_one_line_error(_invoke("extract", tmp_path / "nope", "-o", tmp_path / "x.h5"), "does not exist")


def test_unwritable_output(tiny_cache, tmp_path):
    data, _, _ = tiny_cache
    blocker = tmp_path / "file"
    blocker.write_text("")
    _assert_one_line_error(_invoke("extract", data, "-o", blocker / "x.h5", "--weights", "none"), "choose another -o")


def test_info_refuses_files_that_are_not_caches(tmp_path):
    _assert_one_line_error(_invoke("info", tmp_path / "none.h5"), "no feature cache", "featcache extract")
    (tmp_path / "text.h5").write_text("garbage")
    _assert_one_line_error(_invoke("info", tmp_path / "text.h5"), "not a readable HDF5 file")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5["x"] = [1, 2, 3]
    _assert_one_line_error(_invoke("info", tmp_path / "other.h5"), "not a featcache feature cache")


def test_truncated_cache_is_reported(tiny_cache, tmp_path):
    _, out, _ = tiny_cache
    cut = tmp_path / "cut.h5"
    cut.write_bytes(out.read_bytes()[:3000])
    _assert_one_line_error(_invoke("info", cut), "--overwrite")


def test_download_failure_names_the_weights_option(tiny_cache, tmp_path, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        if kwargs.get("weights") == "imagenet":
            raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- [Errno -3]")
        return original(*args, **kwargs)

    original = keras.applications.Xception
    monkeypatch.setattr(keras.applications, "Xception", offline)
    data, _, _ = tiny_cache
    result = _invoke("extract", data, "-o", tmp_path / "x.h5", "--weights", "imagenet", "-q")
    _assert_one_line_error(result, "could not download the ImageNet Xception weights", "--weights", "FEATCACHE_WEIGHTS")


def test_weights_come_from_the_environment(tiny_cache, tmp_path):
    data, _, _ = tiny_cache
    result = _invoke("extract", data, "-o", tmp_path / "x.h5", "-q", env={"FEATCACHE_WEIGHTS": "/no/such/file.h5"})
    _assert_one_line_error(result, "/no/such/file.h5 does not exist")


def test_help_answers_without_importing_tensorflow():
    code = (
        "import sys; from featcache.cli import main; sys.argv=['featcache','--help']\n"
        "try:\n main()\nexcept SystemExit: pass\nassert 'tensorflow' not in sys.modules and 'h5py' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "extract" in done.stdout


def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "featcache", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "0.1.0" in done.stdout


#: what TensorFlow's C++ and absl logs print on a machine without a GPU (oneDNN notices, CUDA probes)
TENSORFLOW_NOISE = ("cuInit", "oneDNN", "I0000", "W0000", "E0000", "tensorflow/core", "absl::InitializeLog")


def test_extract_prints_no_tensorflow_log_lines(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 1})
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    args = ["extract", data, "-o", tmp_path / "c.h5", "--weights", "none", "--image-size", "71", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "featcache", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "computed 2, reused 0" in done.stdout
    noise = [line for line in done.stderr.splitlines() if any(word in line for word in TENSORFLOW_NOISE)]
    assert noise == []
