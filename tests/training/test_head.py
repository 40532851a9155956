"""train-head on tiny synthetic caches: the head directory contract, best epoch, determinism, bad input."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featcache.cli import main
from featcache.config import HeadConfig
from featcache.errors import ConfigError, HeadError
from featcache.training import stream
from featcache.training.head import fit_head, train_head
from featcache.training.head_files import (
    CURVES_FILE,
    HISTORY_FILE,
    HISTORY_KEYS,
    META_FILE,
    MODEL_FILE,
    check_head_matches,
    load_head,
    read_history,
)
from featcache.training.splits import load_splits
from tests.support import augmented_cache, feature_reads, interleaved_cache, tiny_cache

FAST = HeadConfig(epochs=4, batch_size=8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("head"))


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "head"
    return train_head(cache, out, FAST)


def test_head_directory_holds_the_contract(trained, cache):
    files = {p.name for p in trained.out.iterdir()}
    assert {MODEL_FILE, META_FILE, HISTORY_FILE, CURVES_FILE} <= files
    meta = json.loads((trained.out / META_FILE).read_text())
    assert meta["format"] == "featcache-head" and meta["format_version"] == 1
    assert meta["class_names"] == ["cat", "dog"] and meta["feature_dim"] == 16
    assert meta["cache_fingerprint"] == load_splits(cache).fingerprint
    assert isinstance(meta["preprocessing"], dict) and meta["preprocessing"]["image_size"] == 150
    assert {"weights", "weights_id", "image_size", "cache_path"} <= set(meta)
    assert meta["options"] == FAST.to_dict() and 1 <= meta["best_epoch"] <= 4
    assert {"val_accuracy", "train_accuracy", "val_loss", "train_loss", "fit_seconds"} <= set(meta["metrics"])


def test_history_and_best_epoch(trained):
    history = read_history(trained.out / HISTORY_FILE)
    assert set(history) == set(HISTORY_KEYS) and len(history["loss"]) == 4
    assert history == trained.history
    best = int(np.argmax(history["val_accuracy"])) + 1
    assert trained.best_epoch == best
    assert trained.metrics["val_accuracy"] == max(history["val_accuracy"])


def test_saved_head_is_the_best_epoch_and_predicts_logits(trained, cache):
    model, meta = load_head(trained.out)
    splits = load_splits(cache)
    logits = np.asarray(model(splits.validation.x, training=False))
    assert logits.shape == (len(splits.validation), 2)
    accuracy = np.mean(np.argmax(logits, axis=1) == splits.validation.y)
    assert accuracy == pytest.approx(meta["metrics"]["val_accuracy"])


def test_learning_curves_png_renders(trained):
    with Image.open(trained.out / CURVES_FILE) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_same_options_same_history(cache, trained):
    splits = load_splits(cache)
    again = fit_head(splits, FAST)
    assert again.history == trained.history
    other = fit_head(splits, HeadConfig(epochs=4, batch_size=8, seed=7))
    assert other.history != trained.history


def test_inner_layers_dropout_and_early_stopping(cache, tmp_path):
    config = HeadConfig(epochs=30, batch_size=4, inner=(8,), dropout=0.2, early_stopping=1, lr=0.05)
    result = train_head(cache, tmp_path / "h", config)
    model, meta = load_head(tmp_path / "h")
    assert [layer.__class__.__name__ for layer in model.layers[1:]] == ["Dense", "Dropout", "Dense"]
    assert meta["options"]["inner"] == [8] and meta["options"]["early_stopping"] == 1
    assert result.metrics["epochs_run"] < 30


def test_missing_validation_is_held_out_and_said(tmp_path):
    cache = tiny_cache(tmp_path, counts={"train": 8, "test": 2})
    out = CliRunner().invoke(main, ["train-head", str(cache), "--out", str(tmp_path / "h"), "--epochs", "2"])
    assert out.exit_code == 0, out.output
    assert "held out from train" in out.output
    assert json.loads((tmp_path / "h" / META_FILE).read_text())["metrics"]["validation_carved"] is True


def test_cli_prints_a_summary(cache, tmp_path):
    args = ["train-head", str(cache), "--out", str(tmp_path / "h"), "--epochs", "3", "--batch-size", "8"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert "best epoch" in out.output and "validation accuracy" in out.output and " s on 12 rows" in out.output
    assert str(tmp_path / "h" / MODEL_FILE) in out.output


@pytest.mark.parametrize(
    "options, message",
    [
        (["--epochs", "-1"], "epochs must be an integer >= 1"),
        (["--epochs", "0"], "epochs must be an integer >= 1"),
        (["--lr", "0"], "lr must be a number in (0, 10)"),
        (["--lr", "-0.1"], "lr must be a number in (0, 10)"),
        (["--batch-size", "0"], "batch_size must be"),
        (["--dropout", "1.5"], "dropout must be a number in [0, 1)"),
        (["--inner", "0"], "inner must be"),
        (["--early-stopping", "0"], "early_stopping must be"),
        (["--holdout-fraction", "1"], "holdout_fraction must be"),
        (["--memory-budget", "lots"], "memory_budget must be a size such as 1GB"),
        (["--memory-budget", "-1GB"], "memory_budget must be a size"),
    ],
)
def test_nonsense_options_are_one_line_errors(cache, tmp_path, options, message):
    out = CliRunner().invoke(main, ["train-head", str(cache), "--out", str(tmp_path / "h"), *options])
    assert out.exit_code == 1 and message in out.output
    assert isinstance(out.exception, SystemExit) and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "h").exists()


def test_tensorboard_logs_or_says_what_to_install(cache, tmp_path):
    args = [
        "train-head",
        str(cache),
        "--out",
        str(tmp_path / "h"),
        "--epochs",
        "1",
        "--tensorboard",
        str(tmp_path / "tb"),
    ]
    out = CliRunner().invoke(main, args)
    if importlib.util.find_spec("tensorboard") is None:
        assert out.exit_code == 1 and "pip install tensorboard" in out.output and isinstance(out.exception, SystemExit)
    else:
        assert out.exit_code == 0, out.output
        assert any(p.is_file() for p in (tmp_path / "tb").rglob("*"))


def test_config_rejects_non_numbers():
    with pytest.raises(ConfigError):
        HeadConfig(lr="fast")
    with pytest.raises(ConfigError):
        HeadConfig(epochs=True)


def test_missing_and_foreign_caches_are_one_line_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("not a cache")
    for path, message in [(tmp_path / "none.h5", "featcache extract"), (tmp_path / "notes.txt", "not a readable HDF5")]:
        out = CliRunner().invoke(main, ["train-head", str(path), "--out", str(tmp_path / "h")])
        assert out.exit_code == 1 and message in out.output and isinstance(out.exception, SystemExit)


def test_load_head_explains_what_is_wrong(trained, tmp_path):
    with pytest.raises(HeadError, match="no trained head.*featcache train-head"):
        load_head(tmp_path / "nowhere")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / META_FILE).write_text("{not json")
    with pytest.raises(HeadError, match="unreadable"):
        load_head(bad)
    (bad / META_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(HeadError, match="not a featcache head"):
        load_head(bad)
    (bad / META_FILE).write_text((trained.out / META_FILE).read_text())
    with pytest.raises(HeadError, match="no head.keras"):
        load_head(bad)
    (bad / MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(HeadError, match="cannot be loaded"):
        load_head(bad)


def test_check_head_matches(trained):
    meta = trained.metadata
    check_head_matches(meta, meta["cache_fingerprint"], ["cat", "dog"], "c.h5")
    with pytest.raises(HeadError, match="another fingerprint"):
        check_head_matches(meta, "0" * 64, ["cat", "dog"], "c.h5")
    with pytest.raises(HeadError, match="classes"):
        check_head_matches(meta, meta["cache_fingerprint"], ["cat", "fox"], "c.h5")


def test_out_must_be_a_folder(cache, tmp_path):
    (tmp_path / "file").write_text("x")
    out = CliRunner().invoke(main, ["train-head", str(cache), "--out", str(tmp_path / "file"), "--epochs", "1"])
    assert out.exit_code == 1 and "not a directory" in out.output and isinstance(out.exception, SystemExit)


def test_streamed_training_gives_the_in_memory_history(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "CHUNK_ROWS", 16)  # 300 interleaved rows make 19 chunks
    monkeypatch.setattr(stream, "BUFFER_CHUNKS", 2)
    cache = interleaved_cache(tmp_path / "c.h5", n=300)
    config = HeadConfig(epochs=4, batch_size=8, inner=(6,), dropout=0.1)
    in_memory = fit_head(load_splits(cache, memory_budget=10**9, with_test=False), config)
    splits = load_splits(cache, memory_budget=1000, with_test=False)
    assert splits.memory.streamed and splits.train.x is None and splits.validation.x is None
    reads = feature_reads(monkeypatch)
    streamed = fit_head(splits, config)
    assert streamed.streamed and not in_memory.streamed
    assert 0 < streamed.peak_rows_held < 300 and max(reads) <= 16
    for key in HISTORY_KEYS:
        np.testing.assert_allclose(streamed.history[key], in_memory.history[key], rtol=1e-6, atol=1e-7)
    assert streamed.best_epoch == in_memory.best_epoch
    x = load_splits(cache).validation.x
    np.testing.assert_allclose(streamed.model(x), in_memory.model(x), rtol=1e-5, atol=1e-6)


def test_cli_says_when_it_streams(cache, tmp_path):
    args = ["train-head", str(cache), "--out", str(tmp_path / "h"), "--epochs", "2", "--memory-budget", "1KB"]
    out = CliRunner().invoke(main, args)
    assert out.exit_code == 0, out.output
    assert (
        "read from the cache in chunks" in out.output and "(1.02 kB) exceed the memory budget (1.00 kB)" in out.output
    )
    memory = json.loads((tmp_path / "h" / META_FILE).read_text())["memory"]
    assert memory["streamed"] and memory["memory_budget"] == 1000 and memory["vector_bytes"] == 16 * 16 * 4


def test_memory_budget_sizes():
    assert HeadConfig(memory_budget="1GB").memory_budget == 10**9
    assert HeadConfig(memory_budget="500 MB").memory_budget == 500 * 10**6
    assert HeadConfig(memory_budget="1.5GiB").memory_budget == int(1.5 * 2**30)
    assert HeadConfig(memory_budget="4096").memory_budget == HeadConfig(memory_budget=4096).memory_budget == 4096
    assert 0 < HeadConfig().memory_budget and "memory_budget" not in HeadConfig().to_dict()
    for bad in ("1 parsec", "", -5, True, 1.5):
        with pytest.raises(ConfigError, match="memory_budget must be a size"):
            HeadConfig(memory_budget=bad)


def test_augmented_training_draws_views_and_records_it(tmp_path):
    cache, plain = augmented_cache(tmp_path)
    config = HeadConfig(epochs=3, with_views=True)
    first = train_head(cache, tmp_path / "a", config)
    assert first.metadata["options"]["with_views"] is True
    assert first.metrics["n_views"] == 3 * first.metrics["n_train"]
    assert "augmented views" in first.summary()
    assert train_head(cache, tmp_path / "b", config).history == first.history  # seeded draws
    clean = train_head(cache, tmp_path / "c", HeadConfig(epochs=3))
    assert clean.history["loss"] != first.history["loss"]
    assert clean.metadata["options"]["with_views"] is False
    result = CliRunner().invoke(main, ["train-head", str(plain), "-o", str(tmp_path / "d"), "--with-views"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.count("\n") == 1 and "has no augmented views" in result.output and "--augment" in result.output
