"""ray_engine.py: stage one on a real Ray (local, and a two-node cluster on this machine) equals the local engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from featcache.api import extract
from featcache.cache.layout import read_cache
from featcache.errors import ConfigError
from tests.extraction.ray_scenarios import ROOT, in_loopback, scenario_command
from tests.support import REAL_DATA, REAL_WEIGHTS, FakeBackbone, make_split_dataset, require_real, shards_in_use


def _scenario(tmp_path, *args: str, timeout: float) -> dict:
    (tmp_path / "home").mkdir(exist_ok=True)
    done = in_loopback(scenario_command(*args), timeout=timeout, home=tmp_path / "home")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def _assert_same_rows(got, expected) -> None:
    """Row for row the same cache: paths, labels, splits, hashes, sizes, mtimes, quarantine."""
    assert got.rows == expected.rows
    assert got.class_names == expected.class_names
    assert sorted(got.quarantine, key=str) == sorted(expected.quarantine, key=str)


def _dataset_with_flaws(root):
    data = make_split_dataset(root, counts={"train": 10, "validation": 3, "test": 3})
    (data / "train" / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    (data / "train" / "dog" / "empty.png").write_bytes(b"")
    shutil.copy(data / "train" / "cat" / "cat_000.jpg", data / "test" / "dog" / "same_bytes_as_a_cat.jpg")
    return data


@pytest.mark.slow
def test_local_ray_with_the_fake_backbone_equals_the_local_engine_row_for_row(tmp_path):
    data = _dataset_with_flaws(tmp_path / "data")
    expected = tmp_path / "local.h5"
    extract(data, expected, backbone=FakeBackbone(), image_size=71, batch_size=4)
    out = tmp_path / "ray.h5"
    report = _scenario(tmp_path, "local", str(data), str(out), timeout=600)
    got, want = read_cache(out), read_cache(expected)
    _assert_same_rows(got, want)
    assert report["rows"] == len(want.rows)
    # each distinct content once, except that two actors may each compute the one duplicate of the data
    assert len(set(want.rows.sha256)) <= report["computed"] <= len(set(want.rows.sha256)) + 1
    np.testing.assert_allclose(got.features, want.features, atol=1e-6, rtol=0)
    assert {q.path for q in got.quarantine} == {"train/cat/broken.jpg", "train/dog/empty.png"}
    assert shards_in_use(out)
    # the other engine reuses every vector the Ray run committed
    assert extract(data, out, backbone=FakeBackbone(), image_size=71, batch_size=4).computed == 0


@pytest.mark.slow
def test_ray_actors_read_an_s3_store_themselves_and_equal_the_local_engine_on_disk(tmp_path):
    data = _dataset_with_flaws(tmp_path / "data")
    expected = tmp_path / "local.h5"
    extract(data, expected, backbone=FakeBackbone(), image_size=71, batch_size=4)
    out = tmp_path / "ray.h5"
    report = _scenario(tmp_path, "store", str(data), str(out), timeout=600)
    got, want = read_cache(out), read_cache(expected)
    for column in ("path", "sha256", "label", "split", "size"):  # (mtime_ns holds each object's ETag stamp)
        assert list(getattr(got.rows, column)) == list(getattr(want.rows, column)), column
    assert sorted(got.quarantine, key=str) == sorted(want.quarantine, key=str)
    np.testing.assert_allclose(got.features, want.features, atol=1e-6, rtol=0)
    assert report["rows"] == len(want.rows) and report["computed"] == len(set(want.rows.sha256))
    assert got.attrs["data_dir"] == report["url"]


@pytest.mark.slow
def test_a_ray_run_from_s3_whose_driver_is_killed_resumes_from_its_committed_shards(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 10, "validation": 3, "test": 3})
    options = ["--weights", "none", "--image-size", "71", "--batch-size", "4", "--ray-actors", "1"]
    expected = tmp_path / "local.h5"
    local = extract(data, expected, weights="none", image_size=71, batch_size=4)
    out = tmp_path / "ray.h5"
    report = _scenario(tmp_path, "store-killed", str(data), str(out), "--", *options, timeout=1200)
    assert "error" not in report, report["error"]
    driver, rerun = report["driver_kill"], report["rerun"]
    assert driver["driver"] and driver["returncode"] != 0
    assert rerun["returncode"] == 0, rerun["stderr"]
    got, want = read_cache(out), read_cache(expected)
    for column in ("path", "sha256", "label", "split", "size"):
        assert list(getattr(got.rows, column)) == list(getattr(want.rows, column)), column
    np.testing.assert_allclose(got.features, want.features, atol=1e-5, rtol=0)
    recomputed = int(rerun["stdout"].split("computed ")[1].split(",")[0])
    assert report["committed_before_rerun"] >= 2 * 4
    assert recomputed == local.computed - report["committed_before_rerun"], "committed work must not be recomputed"


@pytest.mark.slow
def test_a_node_that_sees_other_weights_stops_the_run_with_one_line(tmp_path):
    data = make_split_dataset(tmp_path / "data")
    out = tmp_path / "c.h5"
    report = _scenario(tmp_path, "mismatch", str(data), str(out), timeout=600)
    assert report["error"] == "ConfigError"
    assert "differs from the driver's" in report["message"] and "same weights file" in report["message"]
    assert "\n" not in report["message"] and not out.exists()


def test_engine_ray_without_ray_installed_says_how_to_install_it(tmp_path, monkeypatch):
    data = make_split_dataset(tmp_path / "data")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'featcache\[ray\]'"):
        extract(data, tmp_path / "c.h5", backbone=FakeBackbone(), engine="ray")
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize(
    "options, message",
    [({"engine": "spark"}, "engine"), ({"ray_actors": 0}, "ray_actors"), ({"ray_cpus": -1}, "ray_cpus")],
)
def test_bad_engine_options_are_refused(tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        extract(tmp_path, tmp_path / "c.h5", backbone=FakeBackbone(), **options)


def _real_subset(root, per_class: int = 10):
    """The first ``per_class`` images of each class of the real train and validation splits (200 in all)."""
    for split in ("train", "validation"):
        for folder in sorted((REAL_DATA / split).iterdir()):
            for image in sorted(folder.iterdir())[:per_class]:
                (root / split / folder.name).mkdir(parents=True, exist_ok=True)
                shutil.copy(image, root / split / folder.name / image.name)
    return root


@pytest.mark.slow
@pytest.mark.real
def test_two_node_cluster_with_real_weights_survives_killed_actor_and_killed_driver(tmp_path):
    require_real()
    data = _real_subset(tmp_path / "data")
    options = ["--weights", str(REAL_WEIGHTS), "--batch-size", "8", "--ray-actors", "2"]
    expected = tmp_path / "local.h5"
    local = extract(data, expected, weights=str(REAL_WEIGHTS), batch_size=8)
    out = tmp_path / "cluster.h5"
    report = _scenario(tmp_path, "cluster", str(data), str(out), "--", *options, timeout=1500)
    print({k: {a: b for a, b in v.items() if a != "stderr"} if isinstance(v, dict) else v for k, v in report.items()})
    assert "error" not in report, report["error"]
    want = read_cache(expected)

    actor = report["actor_kill"]
    assert actor["returncode"] == 0, actor["stderr"]
    assert actor["actor"] is not None, "no actor process was found to kill"
    got = read_cache(out)
    _assert_same_rows(got, want)
    np.testing.assert_allclose(got.features, want.features, atol=1e-5, rtol=0)

    driver, rerun = report["driver_kill"], report["rerun"]
    assert driver["driver"] and driver["returncode"] != 0
    assert rerun["returncode"] == 0, rerun["stderr"]
    second = read_cache(out.with_name(out.stem + ".driver-killed.h5"))
    _assert_same_rows(second, want)
    np.testing.assert_allclose(second.features, want.features, atol=1e-5, rtol=0)
    recomputed = int(rerun["stdout"].split("computed ")[1].split(",")[0])
    assert report["shards_before_rerun"] >= 2 and report["committed_before_rerun"] >= 2 * 8
    assert recomputed == local.computed - report["committed_before_rerun"], "committed work must not be recomputed"


def test_plain_featcache_never_imports_ray(tmp_path):
    data = make_split_dataset(tmp_path / "data")
    code = (
        "import sys; from featcache.api import extract; import featcache.cli; from tests.support import FakeBackbone; "
        f"extract({str(data)!r}, {str(tmp_path / 'c.h5')!r}, backbone=FakeBackbone(), image_size=71); "
        "print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
