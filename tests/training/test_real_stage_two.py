"""Stage two on the real clothing cache (real Xception weights, 150 px): the accuracy the issue asks for."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from PIL import Image

from featcache.cli import main

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def head(real_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-head") / "head"
    result = CliRunner().invoke(main, ["train-head", str(real_cache), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "head.json").read_text()), result.output


@pytest.fixture(scope="module")
def report(real_cache, head, tmp_path_factory):
    out = tmp_path_factory.mktemp("real-compare")
    result = CliRunner().invoke(main, ["compare", str(real_cache), "--head", str(head[0]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text()), result.output


def test_default_head_reaches_078_validation_accuracy(head):
    _, meta, output = head
    assert meta["options"] == {
        "lr": 0.01,
        "batch_size": 32,
        "epochs": 10,
        "inner": [],
        "dropout": 0.0,
        "seed": 0,
        "early_stopping": None,
        "holdout_fraction": 0.2,
        "with_views": False,
        "drop_leaks": False,
        "drop_label_issues": None,
    }
    assert meta["feature_dim"] == 2048 and len(meta["class_names"]) == 10
    assert meta["metrics"]["val_accuracy"] >= 0.78
    assert f"validation accuracy {meta['metrics']['val_accuracy']:.4f}" in output


def test_learning_curves_show_the_train_validation_gap(head):
    out, meta, _ = head
    best = meta["best_epoch"]
    assert meta["metrics"]["train_accuracy"] - meta["metrics"]["val_accuracy"] > 0.05  # the head overfits
    with Image.open(out / "learning_curves.png") as image:
        assert image.format == "PNG" and image.size == (1000, 400)
    assert len((out / "history.csv").read_text().splitlines()) == 11 and 1 <= best <= 10


def test_ten_epochs_are_run_and_timed(head):
    # How fast they are is measured by benchmarks/, not asserted here.
    _, meta, _ = head
    assert meta["metrics"]["epochs_run"] == 10 and meta["metrics"]["fit_seconds"] > 0


def test_compare_reports_both_models_and_a_tuned_baseline_above_080(report):
    out, data, output = report
    logistic, keras_head = data["models"]["logistic"], data["models"]["keras_head"]
    assert logistic["evaluation"]["validation"]["accuracy"] >= 0.80
    for model in (logistic, keras_head):
        assert set(model["evaluation"]) == {"validation", "test"}
        assert model["evaluation"]["test"]["rows"] == data["rows"]["test"] > 300
    assert data["significance"]["split"] == "test"
    assert "test accuracy" in output and "McNemar" in output


def test_compare_report_files_exist_and_pngs_render(report):
    out, data, _ = report
    for name in data["files"]:
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        with Image.open(png) as image:
            image.verify()
    assert len(list(out.glob("confusion_*.png"))) == 4 and (out / "metrics.png").is_file()
