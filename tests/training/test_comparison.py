"""compare on tiny synthetic caches: both models on the same splits, the report files, bad heads."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from featcache.cli import main
from featcache.config import HeadConfig
from featcache.training.baseline import LogisticBaseline
from featcache.training.comparison import compare
from featcache.training.head import train_head
from featcache.training.head_files import load_head
from featcache.training.splits import load_splits
from tests.support import augmented_cache, tiny_cache

FAST = ["--epochs", "3", "--batch-size", "8"]
CLASSES = ("cat", "dog", "fox")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("compare"), classes=CLASSES)


@pytest.fixture(scope="module")
def run(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(main, ["compare", str(cache), "--out", str(out), *FAST])
    return out, result


def test_cli_prints_both_models_side_by_side(run):
    _, result = run
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    assert "keras_head" in header and "logistic" in header
    for row in ("validation accuracy", "test accuracy", "test macro-F1", "test log loss", "fit seconds", "McNemar"):
        assert row in result.output
    assert "report.md" in result.output


def test_report_holds_every_score_for_both_models(run):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    assert report["rows"] == {"train": 18, "validation": 6, "test": 6}
    assert set(report["models"]) == {"keras_head", "logistic"}
    for model in report["models"].values():
        assert model["fit_seconds"] > 0
        for split in ("validation", "test"):
            scores = model["evaluation"][split]
            assert {"accuracy", "macro_f1", "log_loss", "predict_seconds", "per_class", "confusion_matrix"} <= set(
                scores
            )
            assert np.sum(scores["confusion_matrix"]) == 6 and set(scores["per_class"]) == set(CLASSES)
    assert report["significance"]["split"] == "test"
    assert {"mcnemar_p_value", "bootstrap_ci95", "significant"} <= set(report["significance"])
    assert report["models"]["logistic"]["C"] in [float(c) for c in report["models"]["logistic"]["c_grid"]]


def test_report_files_exist_and_pngs_render(run):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    for name in report["files"]:
        assert (out / name).is_file(), name
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 5  # 2 models x 2 splits of confusion matrices + the metric comparison
    for png in pngs:
        with Image.open(png) as image:
            image.verify()
    markdown = (out / "report.md").read_text()
    assert "![metric comparison](metrics.png)" in markdown and "| fox |" in markdown


def test_saved_baseline_loads_and_reproduces_the_report(run, cache):
    out, _ = run
    report = json.loads((out / "report.json").read_text())
    baseline = LogisticBaseline.load(out / "baseline.npz")
    test = load_splits(cache).test
    accuracy = np.mean(baseline.predict(test.x) == test.y)
    assert accuracy == pytest.approx(report["models"]["logistic"]["evaluation"]["test"]["accuracy"])
    assert baseline.metadata_["class_names"] == list(CLASSES)


def test_the_head_trained_by_compare_is_saved(run):
    out, _ = run
    model, meta = load_head(out / "head")
    assert meta["options"]["epochs"] == 3 and model.output_shape == (None, 3)


def test_an_existing_head_is_used_as_is(cache, tmp_path):
    head = train_head(cache, tmp_path / "head", HeadConfig(epochs=2, batch_size=8))
    result = compare(cache, tmp_path / "report", head=tmp_path / "head")
    keras_head = result.report["models"]["keras_head"]
    assert keras_head["source"] == str(tmp_path / "head") and keras_head["best_epoch"] == head.best_epoch
    assert keras_head["evaluation"]["validation"]["accuracy"] == pytest.approx(head.metrics["val_accuracy"])
    assert not (tmp_path / "report" / "head").exists()


@pytest.mark.parametrize("recorded", ["holdout_fraction", "val_fraction"])
def test_an_existing_head_is_judged_on_the_rows_it_held_out(tmp_path, recorded):
    cache = tiny_cache(tmp_path, counts={"train": 10, "test": 2})
    head = train_head(cache, tmp_path / "head", HeadConfig(epochs=1, batch_size=8, holdout_fraction=0.4))
    meta = json.loads((tmp_path / "head" / "head.json").read_text())
    meta["options"][recorded] = meta["options"].pop("holdout_fraction")  # val_fraction: a head of an older release
    (tmp_path / "head" / "head.json").write_text(json.dumps(meta))
    result = compare(cache, tmp_path / "report", head=tmp_path / "head")
    per_class = result.report["models"]["keras_head"]["evaluation"]["validation"]["per_class"]
    assert sum(c["support"] for c in per_class.values()) == head.metrics["n_validation"] == 8  # 40% of 20


def test_without_test_rows_the_difference_is_judged_on_validation(tmp_path):
    cache = tiny_cache(tmp_path, counts={"train": 6, "validation": 3})
    result = compare(cache, tmp_path / "report", HeadConfig(epochs=2, batch_size=8))
    assert result.report["significance"]["split"] == "validation"
    assert set(result.report["models"]["logistic"]["evaluation"]) == {"validation"}
    assert "test accuracy" not in result.table()


@pytest.fixture(scope="module")
def head_dir(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("head") / "head"
    train_head(cache, out, HeadConfig(epochs=1, batch_size=8))
    return out


@pytest.mark.parametrize(
    "other, message",
    [({"tag": "other-backbone", "classes": CLASSES}, "another fingerprint"), ({"classes": ("cat", "dog")}, "classes")],
)
def test_a_head_of_another_cache_is_refused(head_dir, tmp_path, other, message):
    cache = tiny_cache(tmp_path, **other)
    out = CliRunner().invoke(main, ["compare", str(cache), "--head", str(head_dir), "--out", str(tmp_path / "r")])
    assert out.exit_code == 1 and message in out.output and "featcache train-head" in out.output
    assert isinstance(out.exception, SystemExit)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--head", "missing-head"], "no trained head at missing-head"),
        (["--epochs", "-3"], "epochs must be an integer >= 1"),
        (["--lr", "0"], "lr must be a number in (0, 10)"),
    ],
)
def test_bad_options_are_one_line_errors(cache, tmp_path, args, message):
    out = CliRunner().invoke(main, ["compare", str(cache), "--out", str(tmp_path / "r"), *args])
    assert out.exit_code == 1 and message in out.output and isinstance(out.exception, SystemExit)


def test_missing_or_foreign_cache_is_a_one_line_error(tmp_path):
    (tmp_path / "x.h5").write_bytes(b"\x89HDF\r\n")
    for path in (tmp_path / "none.h5", tmp_path / "x.h5"):
        out = CliRunner().invoke(main, ["compare", str(path), "--out", str(tmp_path / "r")])
        assert out.exit_code == 1 and "featcache extract" in out.output and isinstance(out.exception, SystemExit)


def test_above_the_budget_the_baseline_streams_and_the_report_says_so(cache, run, tmp_path):
    out = tmp_path / "streamed"
    result = CliRunner().invoke(main, ["compare", str(cache), "--out", str(out), *FAST, "--memory-budget", "1KB"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["memory"]["streamed"] and report["memory"]["vector_bytes"] == 30 * 16 * 4
    said = "logistic: streaming SGD (log loss) because the train, validation and test vectors (1.92 kB) exceed"
    assert said in result.output and said in (out / "report.md").read_text()
    logistic = report["models"]["logistic"]
    assert logistic["description"].startswith("streaming SGD (log loss) because") and "alpha_grid" in logistic
    assert logistic["evaluation"]["test"]["accuracy"] >= 0.8
    baseline = LogisticBaseline.load(out / "baseline.npz")
    assert baseline.solver_ == "sgd" and baseline.alpha_ == logistic["alpha"]
    test = load_splits(cache).test
    accuracy = np.mean(baseline.predict(test.x) == test.y)
    assert accuracy == pytest.approx(logistic["evaluation"]["test"]["accuracy"])
    in_memory = json.loads((run[0] / "report.json").read_text())["models"]["keras_head"]["evaluation"]
    for split in ("validation", "test"):  # the head trained on streamed batches is the one trained in memory
        for key in ("accuracy", "log_loss"):
            assert report["models"]["keras_head"]["evaluation"][split][key] == pytest.approx(in_memory[split][key])


def test_augmented_compare_fits_the_baseline_on_every_view(tmp_path):
    cache, _ = augmented_cache(tmp_path, views=3)
    result = compare(cache, tmp_path / "out", HeadConfig(epochs=2, with_views=True))
    models = result.report["models"]
    assert "all 72 augmented views" in models["logistic"]["description"]  # 24 train images x 3
    assert models["keras_head"]["options"]["with_views"] is True
    splits = load_splits(cache, with_views=True)
    x, y = splits.train.with_views()
    assert x.shape == (24 * 4, splits.feature_dim)
    np.testing.assert_array_equal(np.bincount(y), np.bincount(splits.train.y) * 4)
