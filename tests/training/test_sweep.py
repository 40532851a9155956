"""sweep.py and sweep_report.py: the grid trained in groups, ranked, resumed after a kill; the best head usable."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from featcache.api import predict, sweep
from featcache.cli import main
from featcache.config import HeadConfig, SweepConfig
from featcache.errors import ConfigError
from featcache.training.head import fit_head
from featcache.training.splits import load_splits
from featcache.training.sweep import groups_of, train_group
from tests.support import REAL_DATA, FakeBackbone, augmented_cache, kill_at, require_real, tiny_cache

GRID = {"lr": (0.01, 0.1), "inner": (0, 8), "dropout": (0.0, 0.5), "seeds": 2, "epochs": 3, "batch_size": 8}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tiny_cache(tmp_path_factory.mktemp("sweep"), counts={"train": 12, "validation": 4, "test": 2})


@pytest.fixture(scope="module")
def swept(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("swept") / "sweep"
    return sweep(cache, out, jobs=1, baseline_c=(0.1, 1.0), **GRID), out


def test_every_run_is_recorded_with_its_epochs_and_the_ranking_is_the_mean_over_seeds(swept):
    result, out = swept
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == 2 * 2 * 2 * 2 and len(result.runs) == 16
    assert all(len(run["history"]["val_accuracy"]) == 3 for run in result.runs)
    by_config: dict = {}
    for row in rows:  # recomputed from the CSV, not from featcache's ranking code
        by_config.setdefault((float(row["lr"]), int(row["inner"]), float(row["dropout"])), []).append(
            float(row["best_val_accuracy"])
        )
    means = sorted((float(np.mean(v)) for v in by_config.values()), reverse=True)
    assert [r["mean"] for r in result.ranking] == pytest.approx(means)
    top = result.ranking[0]
    assert top["mean"] == pytest.approx(np.mean(by_config[(top["lr"], top["inner"], top["dropout"])]))
    document = json.loads((out / "sweep.json").read_text())
    assert document["ranking"][0] == top and len(document["runs"]) == 16
    assert [b["C"] for b in document["baseline"]] == [0.1, 1.0]
    lines = (out / "sweep.md").read_text().splitlines()
    assert sum(line.startswith("| ") and "---" not in line for line in lines) == (1 + 8) + (1 + 2)  # heads, rows
    for name in ("val_accuracy_by_lr", "val_accuracy_by_inner", "val_accuracy_by_dropout", "heatmap_lr_inner"):
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"


def test_the_best_configuration_is_saved_as_a_head_that_predict_uses(swept, cache, tmp_path):
    result, out = swept
    meta = json.loads((out / "best-head" / "head.json").read_text())
    top = result.ranking[0]
    assert (meta["options"]["lr"], meta["options"]["dropout"]) == (top["lr"], top["dropout"])
    assert meta["options"]["inner"] == ([top["inner"]] if top["inner"] else [])
    # train-head retrains exactly the sweep's run of that configuration and seed: the same figures
    (run,) = [r for r in result.runs if (r["lr"], r["inner"], r["dropout"], r["seed"]) == (
        top["lr"], top["inner"], top["dropout"], meta["options"]["seed"])]  # fmt: skip
    assert meta["metrics"]["val_accuracy"] == pytest.approx(run["best_val_accuracy"], abs=1e-6)
    assert meta["metrics"]["val_loss"] == pytest.approx(run["val_loss_at_best"], rel=1e-5)
    images = sorted((cache.parent / "data" / "test").rglob("*.jpg"))
    found = predict(images, out / "best-head", backbone=FakeBackbone())
    assert len(found.predictions) == len(images) and all(p.error is None for p in found.predictions)


def test_each_run_of_a_group_is_train_heads_fit_of_its_configuration(cache):
    splits = load_splits(cache, 0.2, None, with_test=False)
    config = SweepConfig(lr=(0.01, 0.1), inner=(8,), dropout=(0.0, 0.5), seeds=1, epochs=3, batch_size=8)
    (group,) = groups_of(config, splits.feature_dim, len(splits.class_names))
    assert len(group.branches) == 4
    for run in train_group(splits, group, config):
        head = HeadConfig(lr=run["lr"], inner=(8,), dropout=run["dropout"], epochs=3, batch_size=8, seed=0)
        fit = fit_head(splits, head)
        np.testing.assert_allclose(run["history"]["val_loss"], fit.history["val_loss"], rtol=1e-5, atol=1e-5)
        assert run["best_epoch"] == fit.best_epoch


def test_the_1000_unit_runs_of_the_lessons_grid_go_four_to_a_group_heaviest_first():
    groups = groups_of(SweepConfig(), 2048, 10)
    assert sum(len(g.branches) for g in groups) == 4 * 4 * 4 * 3
    heavy = [g for g in groups if g.inner == 1000]
    assert len(heavy) == 4 * 3 and all(len(g.branches) == 4 for g in heavy) and groups[: len(heavy)] == heavy
    assert all(len(g.branches) == 16 for g in groups if g.inner != 1000)
    assert len({g.name for g in groups}) == len(groups)


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_a_killed_sweep_resumes_without_retraining_finished_groups(cache, tmp_path):
    out = tmp_path / "sweep"
    args = ["--lr", "0.001,0.01,0.1", "--inner", "0,8", "--dropout", "0", "--seeds", "2", "--epochs", "3"]
    command = [sys.executable, "-m", "featcache", "sweep", str(cache), "-o", str(out), "--jobs", "1", "-q", *args]
    runs = out / "runs"
    # killed as it opens the third group's result file: two groups committed, the third trained and lost
    kill_at(command, "open", r"/runs/\.[^/]*\.json\.tmp-\d+$", nth=3, timeout=300)
    before = {p.name: p.read_bytes() for p in runs.glob("*.json")}
    assert len(before) == 2 and not list(runs.glob(".*")), sorted(p.name for p in runs.iterdir())
    done = sum(len(json.loads(data)["runs"]) for data in before.values())
    result = CliRunner().invoke(main, ["sweep", str(cache), "-o", str(out), "--jobs", "1", "-q", *args])
    assert result.exit_code == 0, result.output
    total_runs, groups = 3 * 2 * 2, 2 * 2  # lr x inner x seeds; per seed and inner size
    assert done == 2 * 3 and f"{total_runs - done} trained now" in result.output
    assert all((runs / name).read_bytes() == data for name, data in before.items())
    assert len(list(runs.glob("*.json"))) == groups and not list(runs.glob(".*"))


def test_a_sweep_killed_before_its_rename_leaves_no_temporary_after_a_rerun(cache, tmp_path):
    out = tmp_path / "sweep"
    args = ["--lr", "0.01", "--inner", "0,8", "--dropout", "0", "--seeds", "1", "--epochs", "2"]
    command = [sys.executable, "-m", "featcache", "sweep", str(cache), "-o", str(out), "--jobs", "1", "-q", *args]
    kill_at(command, "os.rename", r"/runs/\.[^/]*\.json\.tmp-\d+$", nth=1, timeout=300)
    runs = out / "runs"
    assert len(list(runs.glob(".*.json.tmp-*"))) == 1  # written, not yet renamed
    result = CliRunner().invoke(main, ["sweep", str(cache), "-o", str(out), "--jobs", "1", "-q", *args])
    assert result.exit_code == 0, result.output
    assert len(list(runs.glob("*.json"))) == 2 and not list(runs.glob(".*"))


def test_two_jobs_give_the_same_runs_as_one(cache, tmp_path, swept):
    result, _ = swept
    grid = {**GRID, "lr": (0.1,), "seeds": 2}
    two = sweep(cache, tmp_path / "two", jobs=2, **grid)
    mine = {(r["inner"], r["dropout"], r["seed"]): r["history"] for r in result.runs if r["lr"] == 0.1}
    for run in two.runs:
        got = run["history"]["val_loss"]
        np.testing.assert_allclose(got, mine[(run["inner"], run["dropout"], run["seed"])]["val_loss"], rtol=1e-4)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"lr": ()}, "lr needs"),
        ({"inner": (-1,)}, "inner"),
        ({"dropout": (1.0,)}, "dropout"),
        ({"heatmap": ("lr",)}, "heatmap"),
    ],
)
def test_bad_sweep_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        SweepConfig(**options)


def test_a_bad_list_on_the_command_line_is_one_line(cache, tmp_path):
    result = CliRunner().invoke(main, ["sweep", str(cache), "-o", str(tmp_path / "s"), "--lr", "fast"])
    assert result.exit_code != 0 and "comma-separated list" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.real
def test_on_the_clothing_cache_the_best_head_reaches_80_percent(real_cache, tmp_path):
    require_real()
    assert REAL_DATA.is_dir()
    result = sweep(real_cache, tmp_path / "sweep", lr=(0.001, 0.01), inner=(0, 100), dropout=(0.0, 0.5), seeds=1)
    meta = json.loads((tmp_path / "sweep" / "best-head" / "head.json").read_text())
    assert result.ranking[0]["mean"] >= 0.80
    assert meta["metrics"]["val_accuracy"] >= 0.80


def test_an_augmented_sweep_trains_on_views_and_never_reuses_runs_without_them(tmp_path):
    cache, _ = augmented_cache(tmp_path, views=3)
    grid = {"lr": (0.01,), "inner": (0, 8), "dropout": (0.0,), "seeds": 1, "epochs": 3, "batch_size": 8, "jobs": 1}
    out = tmp_path / "sweep"
    plain = sweep(cache, out, **grid)
    views = sweep(cache, out, with_views=True, **grid)
    assert views.trained == 2, "runs without views must not stand in for runs with them"
    assert [r["history"]["loss"] for r in views.runs] != [r["history"]["loss"] for r in plain.runs]
    splits = load_splits(cache, 0.2, None, with_test=False, with_views=True)
    config = SweepConfig(lr=(0.01,), inner=(0,), dropout=(0.0,), seeds=1, epochs=3, batch_size=8)
    alone = train_group(splits, groups_of(config, splits.feature_dim, 2)[0], config)
    fit = fit_head(splits, HeadConfig(lr=0.01, epochs=3, batch_size=8, with_views=True))
    np.testing.assert_allclose(alone[0]["history"]["val_loss"], fit.history["val_loss"], rtol=1e-5, atol=1e-5)
    head = json.loads((out / "best-head" / "head.json").read_text())
    assert head["options"]["with_views"] is True
