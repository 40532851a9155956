"""predict: new images through the recorded preprocessing, the backbone and the head, on tiny synthetic data."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from featcache.api import extract, predict
from featcache.cache.layout import read_cache
from featcache.cli import main
from featcache.errors import WeightsError
from featcache.training.head_files import head_logits, load_head
from tests.support import FakeBackbone, feature_reads, make_split_dataset, write_head


@pytest.fixture(scope="module")
def fake_setup(tmp_path_factory):
    """A cache made with the fake backbone at 71 px and a head fitted on it."""
    root = tmp_path_factory.mktemp("predict")
    data = make_split_dataset(root / "data", counts={"train": 6, "validation": 3, "test": 1})
    cache = root / "cache.h5"
    extract(data, cache, backbone=FakeBackbone(), image_size=71)
    return data, cache, write_head(root / "head", cache, epochs=80)


def cached_logits(cache_path, head_dir, files, data):
    """What the head says about each file's cached vector, keyed by path."""
    cache = read_cache(cache_path)
    model, _ = load_head(head_dir)
    index = {data / rel: i for i, rel in enumerate(cache.rows.path)}
    rows = [index[f] for f in files]
    return dict(zip(files, head_logits(model, cache.features[rows]), strict=True))


def test_predict_replays_the_cache_exactly(fake_setup):
    data, cache, head = fake_setup
    result = predict([data / "validation"], head, backbone=FakeBackbone(), batch_size=4)
    files = [p.path for p in result.predictions]
    assert len(files) == 6 and not result.failed
    expected = cached_logits(cache, head, files, data)
    for p in result.predictions:
        np.testing.assert_allclose(p.logits, expected[p.path], atol=1e-5)
        assert p.label == p.path.parent.name  # the fitted head tells red cats from green dogs


def test_predict_reads_no_vector_of_the_cache(fake_setup, monkeypatch):
    data, _, head = fake_setup
    reads = feature_reads(monkeypatch)
    result = predict([data / "test"], head, backbone=FakeBackbone())
    assert len(result.predictions) == 2 and reads == []


def test_top_k_probabilities_are_sorted_and_capped(fake_setup):
    data, _, head = fake_setup
    result = predict(data / "test" / "cat", head, backbone=FakeBackbone(), top_k=5)
    top = result.predictions[0].top
    assert [name for name, _ in top] == ["cat", "dog"]  # only two classes exist
    assert top[0][1] >= top[1][1] and sum(p for _, p in top) == pytest.approx(1.0, abs=1e-5)


def test_unreadable_files_are_reported_and_do_not_stop_the_run(fake_setup, tmp_path):
    data, _, head = fake_setup
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    good = data / "test" / "dog"
    result = predict([broken, tmp_path / "missing.png", good], head, backbone=FakeBackbone())
    assert [bool(p.error) for p in result.predictions] == [True, True, False]
    assert "Pillow cannot identify" in result.predictions[0].error
    assert result.predictions[2].label == "dog"


def test_a_backbone_with_other_weights_is_refused(fake_setup):
    data, _, head = fake_setup
    other = FakeBackbone()
    other.identity = lambda: {"weights_id": "sha256:other", "feature_dim": 16}
    with pytest.raises(WeightsError, match="its classes would be wrong"):
        predict(data / "test", head, backbone=other)


@pytest.fixture(scope="module")
def xception_head(tiny_xception_cache, tmp_path_factory):
    return write_head(tmp_path_factory.mktemp("xhead") / "head", tiny_xception_cache, epochs=5)


def test_cli_predict_with_the_real_backbone_graph(tiny_xception_cache, xception_head):
    """The CLI builds Xception from the head's record (random weights here) and matches the cache."""
    data = tiny_xception_cache.parent / "data"
    runner = CliRunner()
    out = runner.invoke(main, ["predict", str(data / "validation"), "--head", str(xception_head), "--json", "-q"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert len(rows) == 4 and all(len(r["predictions"]) == 2 and r["error"] is None for r in rows)
    api = predict([Path(r["path"]) for r in rows], xception_head)
    expected = cached_logits(tiny_xception_cache, xception_head, [p.path for p in api.predictions], data)
    for p in api.predictions:
        np.testing.assert_allclose(p.logits, expected[p.path], atol=1e-4)
    assert [r["predictions"][0]["class"] for r in rows] == [p.label for p in api.predictions]


def test_cli_predict_text_and_csv(tiny_xception_cache, xception_head, tmp_path):
    data = tiny_xception_cache.parent / "data"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    runner = CliRunner()
    args = ["predict", str(data / "test"), str(broken), "--head", str(xception_head), "--top-k", "1", "-q"]
    text = runner.invoke(main, args)
    assert text.exit_code == 0, text.output
    assert f"{broken}: error: empty file (0 bytes)" in text.stdout
    assert "classified 2 image(s), 1 could not be read" in text.stderr
    table = runner.invoke(main, [*args, "--csv"])
    rows = list(csv.DictReader(io.StringIO(table.stdout)))
    assert [r["rank"] for r in rows] == ["1", "1", ""] and rows[2]["error"].startswith("empty file")
    both = runner.invoke(main, [*args, "--csv", "--json"])
    assert both.exit_code == 2 and "not both" in both.output


def test_cli_predict_refuses_other_weights(tiny_xception_cache, xception_head, tmp_path):
    other = tmp_path / "other.weights.h5"
    other.write_bytes(b"other")
    data = tiny_xception_cache.parent / "data"
    out = CliRunner().invoke(main, ["predict", str(data), "--head", str(xception_head), "--weights", str(other)])
    assert out.exit_code == 1 and "--weights" in out.output and isinstance(out.exception, SystemExit)
