"""compare A.h5 B.h5: the same head options and baseline on each cache, side by side, and a split check."""

from __future__ import annotations

import csv
import json

from click.testing import CliRunner
from PIL import Image

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.cli import main
from tests.support import FakeBackbone, make_split_dataset, write_image


def test_several_caches_are_compared_side_by_side_and_differing_splits_are_named(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 18, "validation": 4, "test": 4})
    a, b, other = tmp_path / "a.h5", tmp_path / "b.h5", tmp_path / "other.h5"
    extract(data, a, backbone=FakeBackbone("a"))
    extract(data, b, backbone=FakeBackbone("b"))
    assert read_cache(a).attrs["images_per_s"] > 0  # 52 images computed: the speed is recorded
    out = tmp_path / "cmp"
    result = CliRunner().invoke(main, ["compare", str(a), str(b), "-o", str(out), "--epochs", "2"])
    assert result.exit_code == 0, result.output
    assert "every cache holds the same images in the same splits" in result.output
    rows = list(csv.DictReader(open(out / "backbones.csv")))
    assert [r["backbone"] for r in rows] == ["xception-a", "xception-b"]  # same backbone name: told apart by file
    for row, folder in zip(rows, ("xception-a", "xception-b")):
        report = json.loads((out / folder / "report.json").read_text())
        assert float(row["head_accuracy"]) == report["models"]["keras_head"]["evaluation"]["test"]["accuracy"]
        assert float(row["logistic_macro_f1"]) == report["models"]["logistic"]["evaluation"]["test"]["macro_f1"]
        assert row["feature_dim"] == "16"
    assert Image.open(out / "backbones.png").size[0] > 100
    for i in range(3):  # three more test images
        write_image(data / "test" / "cat" / f"more_{i}.jpg", (200, 40, 40), seed=500 + i)
    extract(data, other, backbone=FakeBackbone("c"))
    again = CliRunner().invoke(main, ["compare", str(a), str(other), "-o", str(tmp_path / "cmp2"), "--epochs", "1"])
    assert again.exit_code == 0, again.output
    assert "splits differ: other.h5 test has 3 image(s) a.h5 lacks there and lacks 0 it has" in again.output


def test_head_with_several_caches_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["compare", "a.h5", "b.h5", "--head", str(tmp_path)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "--head compares one cache" in result.output
