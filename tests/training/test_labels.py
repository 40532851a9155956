"""training/labels.py: out-of-fold probabilities rank the rows whose label is wrong first."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

import featcache
from featcache.cli import main
from featcache.errors import ConfigError
from featcache.training.labels import out_of_fold
from tests.support import FakeBackbone, make_split_dataset


@pytest.fixture
def mislabelled(tmp_path):
    """A cache of three well-separated classes in which two train images carry another class's label."""
    data = make_split_dataset(tmp_path / "data", counts={"train": 12, "validation": 2}, classes=("cat", "dog", "fox"))
    rows = [(p.relative_to(data).as_posix(), p.parent.name) for p in sorted(data.rglob("*.*")) if p.is_file()]
    wrong = {"train/cat/cat_004.jpg": "dog", "train/fox/fox_007.jpg": "cat"}
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "split"])
        writer.writerows((path, wrong.get(path, label), path.split("/")[0]) for path, label in rows)
    cache = tmp_path / "c.h5"
    featcache.extract(data, cache, manifest=manifest, backbone=FakeBackbone(), image_size=71)
    return cache, wrong


def test_the_wrong_labels_rank_first_with_the_class_they_belong_to(mislabelled, tmp_path):
    cache, wrong = mislabelled
    result = featcache.labels(cache, tmp_path / "labels", folds=4, baseline_c=1.0)  # 16-d features, 36 rows
    assert len(result.rows) == 36 and [row["rank"] for row in result.rows] == list(range(1, 37))
    first = {row["path"]: (row["given"], row["suggested"]) for row in result.rows[:2]}
    assert first == {"train/cat/cat_004.jpg": ("dog", "cat"), "train/fox/fox_007.jpg": ("cat", "fox")}
    given = [row["given_probability"] for row in result.rows]
    assert given == sorted(given) and given[1] < 0.5 < given[2]
    with open(tmp_path / "labels" / "labels.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["path"] for r in table] == [r["path"] for r in result.rows] and table[0]["suggested"] in ("cat", "fox")
    document = json.loads((tmp_path / "labels" / "labels.json").read_text())
    assert (document["split"], document["folds"], len(document["rows"])) == ("train", 4, 36)


def test_each_rows_probabilities_come_from_models_that_never_saw_it():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)), np.repeat([0, 1], 20)
    x[:, 0] += 3 * y  # class 1 lies apart on the first axis
    x[0, 0] = 9.0  # row 0 is labelled 0 but lies among class 1
    p = out_of_fold(x, y, 2, folds=5, c=1.0, seed=0)
    assert p.shape == (40, 2) and np.allclose(p.sum(axis=1), 1)
    assert p[0, 0] < 0.5  # fitted on it, a model would have learnt its label
    assert np.array_equal(p, out_of_fold(x, y, 2, folds=5, c=1.0, seed=0))


def test_the_command_prints_the_likeliest_errors_and_refuses_too_many_folds(mislabelled, tmp_path):
    cache, _ = mislabelled
    out = CliRunner().invoke(
        main, ["labels", str(cache), "-o", str(tmp_path / "l"), "--folds", "3", "--baseline-c", "1"]
    )
    assert out.exit_code == 0, out.output
    assert "36 train rows ranked" in out.output and "train/cat/cat_004.jpg: dog" in out.output
    refused = CliRunner().invoke(main, ["labels", str(cache), "-o", str(tmp_path / "l"), "--folds", "13"])
    assert refused.exit_code == 1 and "fewer rows than the 13 folds" in refused.output
    assert "Traceback" not in refused.output
    with pytest.raises(ConfigError, match="folds"):
        featcache.labels(cache, tmp_path / "l", folds=1)


def _written_csv(path, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["rank", "path", "given"])
        writer.writerows(rows)
    return path


def test_train_head_and_compare_leave_out_the_listed_rows_and_say_so(mislabelled, tmp_path):
    cache, wrong = mislabelled
    listed = _written_csv(tmp_path / "drop.csv", [(i, path, label) for i, (path, label) in enumerate(wrong.items())])
    out = CliRunner().invoke(
        main,
        ["train-head", str(cache), "-o", str(tmp_path / "head"), "--epochs", "2", "--drop-label-issues", str(listed)],
    )
    assert out.exit_code == 0, out.output
    assert "on 34 rows (2 likely mislabelled train rows left out)" in out.output
    meta = json.loads((tmp_path / "head" / "head.json").read_text())
    assert meta["metrics"]["label_issues_dropped"] == 2 and meta["options"]["drop_label_issues"] == str(listed)
    result = featcache.compare(cache, tmp_path / "cmp", head=tmp_path / "head")  # the head's rows, for both
    assert result.report["rows"]["train"] == 34 and result.report["label_issues_dropped"] == 2
    assert "both trained without 2 likely mislabelled train rows" in result.summary()
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "34 train, 6 validation" in page and "2 likely mislabelled train rows left out" in page


def test_a_number_leaves_out_the_first_rows_of_the_ranking(mislabelled, tmp_path):
    cache, _ = mislabelled
    ranked = featcache.labels(cache, tmp_path / "labels")  # the default settings, as --drop-label-issues uses
    result = featcache.sweep(
        cache, tmp_path / "sweep", lr=[0.01], inner=[0], dropout=[0.0], seeds=1, epochs=2, jobs=1,
        drop_label_issues=3,
    )  # fmt: skip
    assert "trained without 3 likely mislabelled train rows" in result.summary()
    best = json.loads((tmp_path / "sweep" / "best-head" / "head.json").read_text())
    assert best["metrics"]["n_train"] == 33 and best["metrics"]["label_issues_dropped"] == 3
    assert json.loads((tmp_path / "sweep" / "sweep.json").read_text())["settings"]["label_issues_dropped"] == 3
    from featcache.training.labels import label_issue_rows
    from featcache.training.splits import load_splits

    kept = load_splits(cache, label_issues=label_issue_rows(cache, 3)).train.rows
    assert set(ranked.cache_rows[:3].tolist()).isdisjoint(kept) and len(kept) == 33


@pytest.mark.parametrize(
    "given, message",
    [
        ("missing.csv", "cannot read"),
        ("nopath.csv", "has no path column"),
        ("unknown.csv", "1 listed path(s) are not train rows"),
        ("99", "exceeds the 36 train rows"),
        ("0", "drop_label_issues must be an integer >= 1"),
    ],
)
def test_a_bad_drop_list_is_refused_in_one_line_before_anything_is_written(mislabelled, tmp_path, given, message):
    cache, _ = mislabelled
    (tmp_path / "nopath.csv").write_text("file,label\nx.jpg,cat\n")
    _written_csv(tmp_path / "unknown.csv", [(1, "validation/cat/cat_000.jpg", "cat")])
    spec = given if given.isdigit() else str(tmp_path / given)
    out = CliRunner().invoke(
        main, ["train-head", str(cache), "-o", str(tmp_path / "head"), "--drop-label-issues", spec]
    )
    assert out.exit_code != 0 and message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1 and not (tmp_path / "head").exists()
