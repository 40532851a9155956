"""End-to-end command line: extract and info, their summaries, one-line errors for bad input, and one
vocabulary of options across the commands (former spellings still taken, with a notice)."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import click
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


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
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


# One vocabulary across commands: each test below hands the options to a stand-in for the API function
# the command calls, and checks what it receives.


class _Result:
    def summary(self):
        return "done"

    text = status = summary


@pytest.fixture
def calls(monkeypatch):
    """What each API function the commands call receives: name -> (args, kwargs) of its last call."""
    import featcache.api

    seen = {}
    for name in ("extract", "predict", "train_head", "compare", "sweep", "leaks"):

        def stand_in(*args, _name=name, **kwargs):
            seen[_name] = (args, kwargs)
            return _Result()

        monkeypatch.setattr(featcache.api, name, stand_in)
    return seen


#: each former spelling, the spelling that replaces it, and the keyword the API function then receives
RENAMED = [
    ("train-head", ["--val-fraction", "0.3"], ["--holdout-fraction", "0.3"], {"holdout_fraction": 0.3}),
    ("train-head", ["--augmented"], ["--with-views"], {"with_views": True}),
    ("compare", ["--val-fraction=0.3"], ["--holdout-fraction=0.3"], {"holdout_fraction": 0.3}),
    ("compare", ["--augmented"], ["--with-views"], {"with_views": True}),
    ("sweep", ["--val-fraction", "0.3"], ["--holdout-fraction", "0.3"], {"holdout_fraction": 0.3}),
    ("sweep", ["--augmented"], ["--with-views"], {"with_views": True}),
    ("sweep", ["--c", "0.1,1"], ["--baseline-c", "0.1,1"], {"baseline_c": (0.1, 1.0)}),
]


@pytest.mark.parametrize("command, old, new, received", RENAMED)
def test_a_renamed_option_works_under_its_new_name_without_a_notice(calls, command, old, new, received):
    result = _invoke(command, *new)
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout == "done\n"
    assert calls[command.replace("-", "_")][1].items() >= received.items()


@pytest.mark.parametrize("command, old, new, received", RENAMED)
def test_a_former_spelling_still_works_with_a_one_line_notice(calls, command, old, new, received):
    result = _invoke(command, *old)
    assert result.exit_code == 0, result.output
    former, current = old[0].split("=")[0], new[0].split("=")[0]
    notice = f"{former} of {command} is now {current}; the old name goes in the next release\n"
    assert result.stderr == notice and result.stdout == "done\n"
    assert calls[command.replace("-", "_")][1].items() >= received.items()


def test_extract_takes_out_and_its_former_spelling_output(calls, tmp_path):
    assert _invoke("extract", tmp_path, "--out", tmp_path / "a.h5").stderr == ""
    assert calls["extract"][0] == (tmp_path, tmp_path / "a.h5")
    result = _invoke("extract", tmp_path, "--output", tmp_path / "b.h5")
    assert result.exit_code == 0 and result.stderr == (
        "--output of extract is now --out; the old name goes in the next release\n"
    )
    assert calls["extract"][0] == (tmp_path, tmp_path / "b.h5")


def test_extract_keeps_val_fraction_for_the_share_of_validation_images(calls, tmp_path):
    result = _invoke("extract", tmp_path, "--val-fraction", "0.3")
    assert result.exit_code == 0 and result.stderr == "" and calls["extract"][1]["val_fraction"] == 0.3


def _commands():
    context = click.Context(main, info_name="featcache")
    return {name: main.get_command(context, name) for name in main.list_commands(context)}


def _list_options():
    return [(name, param) for name, command in _commands().items() for param in command.params if param.multiple]


def test_every_list_option_takes_the_same_forms():
    from featcache.cli import _joined, _Values

    found = {(name, param.name) for name, param in _list_options()}
    assert found >= {("train-head", "inner"), ("compare", "inner"), ("sweep", "lr"), ("sweep", "baseline_c")}
    for name, param in _list_options():
        assert isinstance(param.type, _Values) and param.callback is _joined, f"{name} --{param.name}"


@pytest.mark.parametrize("command, param", _list_options(), ids=lambda p: getattr(p, "name", p))
def test_a_list_option_is_repeated_or_comma_separated_or_both(calls, command, param):
    kind = param.type.kind
    values = {int: ["1", "2", "3"], float: ["0.1", "0.2", "0.3"], str: ["lr", "inner", "dropout"]}[kind]
    option = param.opts[0]
    forms = [
        [option, ",".join(values)],
        [arg for value in values for arg in (option, value)],
        [option, ",".join(values[:2]), option, values[2]],
    ]
    for form in forms:
        assert _invoke(command, *form).exit_code == 0
        assert calls[command.replace("-", "_")][1][param.name] == tuple(map(kind, values)), form


def test_every_command_that_shows_a_progress_bar_takes_q():
    import featcache.api

    commands = _commands()
    shown = [
        n for n in commands if "progress" in inspect.signature(getattr(featcache.api, n.replace("-", "_"))).parameters
    ]
    quiet = [n for n, command in commands.items() if any("-q" in param.opts for param in command.params)]
    assert sorted(shown) == sorted(quiet) == ["extract", "leaks", "predict", "sweep"]


@pytest.mark.parametrize("command", ["extract", "leaks", "predict", "sweep"])
def test_q_turns_the_progress_bar_off(calls, tmp_path, command):
    arguments = {"extract": [tmp_path], "predict": [tmp_path, "--head", tmp_path]}.get(command, [])
    assert _invoke(command, *arguments).exit_code == 0
    assert calls[command][1]["progress"] is True
    assert _invoke(command, *arguments, "-q").exit_code == 0
    assert calls[command][1]["progress"] is False


def test_every_command_that_writes_takes_o_and_out():
    writing = {
        name: param.opts for name, command in _commands().items() for param in command.params if param.name == "out"
    }
    assert sorted(writing) == ["compare", "export", "extract", "labels", "leaks", "sweep", "train-head"]
    assert all(opts == ["-o", "--out"] for opts in writing.values()), writing
