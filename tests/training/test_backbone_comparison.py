"""compare A.h5 B.h5: the same head options and baseline on each cache, side by side, and a split check."""

from __future__ import annotations

import csv
import json

import h5py
import pytest
from click.testing import CliRunner
from PIL import Image

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.cli import main
from featcache.names import NAME_LENGTH, file_component
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


def caches_named(root, backbones) -> list:
    """One tiny cache per name in ``backbones``, each with that string as its ``backbone`` attribute."""
    data = make_split_dataset(root / "data", counts={"train": 6, "validation": 2, "test": 2})
    paths = []
    for i, name in enumerate(backbones):
        path = root / "caches" / f"c{i}" / "features.h5"
        extract(data, path, backbone=FakeBackbone())
        with h5py.File(path, "r+") as h5:
            h5.attrs["backbone"] = name
        paths.append(path)
    return paths


def compare_confined(root, caches) -> tuple[list[dict], list]:
    """Run ``featcache compare`` on ``caches`` into ``root/a/b/out``; check it wrote nothing elsewhere."""
    out = root / "a" / "b" / "out"
    before = set(root.rglob("*"))
    result = CliRunner().invoke(main, ["compare", *map(str, caches), "-o", str(out), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    outside = [p for p in set(root.rglob("*")) - before if p not in (out, *out.parents) and out not in p.parents]
    assert not outside, f"written outside --out: {sorted(outside)}"
    rows = list(csv.DictReader((out / "backbones.csv").read_text(encoding="utf-8").splitlines()))
    return rows, sorted(p.parent for p in out.glob("*/report.json"))


@pytest.mark.parametrize(
    "hostile",
    [
        "../../x",
        "ABSOLUTE",
        *(pytest.param(h, marks=pytest.mark.slow) for h in ("..", ".", "", "x" * 300, "x/" * 40 + "y")),
    ],
    ids=["up-two", "absolute", "parent", "itself", "empty", "300-chars", "40-folders"],
)  # the first two in make test, the others with the slow tests
def test_a_backbone_attribute_never_leads_out_of_the_output_folder(tmp_path, hostile):
    hostile = str(tmp_path / "escaped") if hostile == "ABSOLUTE" else hostile
    rows, folders = compare_confined(tmp_path, caches_named(tmp_path, [hostile, "xception"]))
    out = tmp_path / "a" / "b" / "out"
    assert folders == sorted(out / r["backbone"] for r in rows) and len(folders) == 2  # one folder per cache
    assert len(rows[0]["backbone"]) < 100 and rows[1]["backbone"] == "xception"  # a safe name keeps its name


def test_caches_whose_names_meet_keep_folders_of_their_own(tmp_path):
    one, two = caches_named(tmp_path, ["xception", "xception"])  # same backbone, same file name
    rows, folders = compare_confined(tmp_path, [one, two])
    assert len(folders) == 2 and rows[0]["backbone"] != rows[1]["backbone"]
    more = tmp_path / "more"
    rows, folders = compare_confined(more, caches_named(more, ["a/b", "a\\b", "a_b"]))
    assert len(folders) == 3 and rows[2]["backbone"] == "a_b"


def test_a_name_read_from_a_file_becomes_one_safe_file_name():
    for safe in ("xception", "efficientnet_b0", "a_b", "v1.2+rc-3"):
        assert file_component(safe) == safe
    hostile = ["../../x", "..", ".", "", "/etc/passwd", "a/b", "a\\b", "a\\..\\..\\x", "a\x00b", ".hidden", "x" * 300]
    made = [file_component(name) for name in hostile]
    assert len(set(made)) == len(hostile) and "a_b" not in made  # distinct names stay distinct, and apart
    for name in made:
        assert name not in ("", ".", "..") and not name.startswith(".") and len(name) <= NAME_LENGTH
        assert not set(name) & set("/\\\x00:") and name.isascii()
    assert file_component("x" * 300) != file_component("x" * 301)  # cut to the same length, told apart by hash
