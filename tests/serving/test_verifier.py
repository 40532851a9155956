"""verify: recompute sampled rows with the live model and name why they disagree, on tiny synthetic data."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from featcache.api import extract, verify
from featcache.cli import main
from featcache.errors import CacheError, ConfigError
from tests.support import FakeBackbone, fake_embed, feature_reads, make_split_dataset, with_vectors_of


class OtherWeights(FakeBackbone):
    """The fake backbone with other 'weights': same shape of vectors, other values."""

    def identity(self) -> dict:
        return {**super().identity(), "weights_id": "sha256:other"}

    def build(self):
        return lambda batch: fake_embed(batch) * 1.01


@pytest.fixture
def fake_cache(tmp_path):
    data = make_split_dataset(tmp_path / "data", counts={"train": 3, "validation": 1, "test": 1})
    out = tmp_path / "cache.h5"
    extract(data, out, backbone=FakeBackbone(), image_size=71)
    return out


def test_an_unchanged_cache_passes(fake_cache):
    result = verify(fake_cache, backbone=FakeBackbone(), sample=4)
    assert result.passed and result.compared == result.sampled == 4
    assert result.max_abs_diff == 0.0 and result.min_cosine == pytest.approx(1.0) and not result.causes


def test_only_the_sampled_vectors_are_read(fake_cache, monkeypatch):
    reads = feature_reads(monkeypatch)
    result = verify(fake_cache, backbone=FakeBackbone(), sample=3)
    assert result.compared == 3 and sum(reads) == 3  # of 10 rows: /features is never read whole


def test_the_sample_is_seeded(fake_cache):
    a = verify(fake_cache, backbone=FakeBackbone(), sample=3, seed=7)
    b = verify(fake_cache, backbone=FakeBackbone(), sample=3, seed=7)
    assert a.worst_path == b.worst_path and a.sampled == 3


def test_other_weights_fail_and_are_named_first(fake_cache):
    result = verify(fake_cache, backbone=OtherWeights())
    assert not result.passed and result.max_abs_diff > 1e-4
    assert result.causes[0].startswith("weights file:") and "sha256:other" in result.causes[0]


def test_changed_and_missing_files_are_reported_not_counted(fake_cache):
    data = fake_cache.parent / "data"
    (data / "train" / "cat" / "cat_000.jpg").unlink()
    shutil.copy(data / "train" / "dog" / "dog_000.jpg", data / "train" / "cat" / "cat_001.jpg")
    result = verify(fake_cache, backbone=FakeBackbone(), sample=100)
    assert result.passed and result.compared == result.sampled - 2
    assert sorted(result.skipped) == [
        ("train/cat/cat_000.jpg", "file not found"),
        ("train/cat/cat_001.jpg", "file changed since extraction"),
    ]


def test_a_moved_data_folder_fails_until_data_dir_is_given(fake_cache, tmp_path):
    moved = tmp_path / "moved"
    (fake_cache.parent / "data").rename(moved)
    lost = verify(fake_cache, backbone=FakeBackbone())
    assert not lost.passed and lost.compared == 0 and "--data-dir" in lost.causes[0]
    assert verify(fake_cache, backbone=FakeBackbone(), data_dir=moved).passed


def test_bad_options_and_missing_caches_are_refused(fake_cache, tmp_path):
    with pytest.raises(ConfigError, match="sample"):
        verify(fake_cache, sample=0)
    with pytest.raises(CacheError, match="featcache extract"):
        verify(tmp_path / "absent.h5")


def tampered_size_cache(source, tmp_path):
    """A copy of ``source`` (71 px) whose vectors were made from 80 px images, as a wrong resize would."""
    bigger = tmp_path / "80px.h5"
    extract(source.parent / "data", bigger, weights="none", image_size=80, batch_size=8)
    return with_vectors_of(source, bigger, tmp_path / "tampered.h5")


@pytest.mark.slow  # make test stays under 5 minutes; CI runs it with make test-slow
def test_real_xception_graph_passes_on_a_fresh_cache_and_fails_on_another_size(tiny_xception_cache, tmp_path):
    fresh = verify(tiny_xception_cache, sample=8)
    assert fresh.passed and fresh.compared == 8 and fresh.weights == "none"
    assert fresh.max_abs_diff <= 1e-4 and fresh.max_rel_diff <= 1e-3 and fresh.min_cosine > 0.9999
    bad = verify(tampered_size_cache(tiny_xception_cache, tmp_path), sample=8)
    assert not bad.passed and bad.max_rel_diff > 1e-2
    assert bad.causes[0].startswith("resize or decoding") and "71x71" in bad.causes[0]


def test_cli_verify_exit_codes_and_messages(tiny_xception_cache, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["verify", str(tiny_xception_cache), "--sample", "4"])
    assert ok.exit_code == 0, ok.output
    assert "recomputed 4 of 4 sampled rows" in ok.stdout and ": OK" in ok.stdout
    other = tmp_path / "other.weights.h5"
    _save_other_weights(other)
    bad = runner.invoke(main, ["verify", str(tiny_xception_cache), "--sample", "4", "--weights", str(other)])
    assert bad.exit_code == 1 and "MISMATCH" in bad.stdout
    assert "does not match the live model; most likely weights file" in bad.stderr
    assert isinstance(bad.exception, SystemExit)


def _save_other_weights(path):
    """Xception with other seeded random weights, saved as a weights file the CLI can be given."""
    import keras

    keras.utils.set_random_seed(1)
    keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3)).save_weights(path)


def test_cli_verify_json(tiny_xception_cache):
    out = CliRunner().invoke(main, ["verify", str(tiny_xception_cache), "--sample", "2", "--json"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["passed"] and report["compared"] == 2 and report["max_abs_diff"] <= report["tolerance"]
