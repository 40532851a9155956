"""The logistic baseline: C chosen on validation, probabilities as sklearn's, saved and loaded without pickle."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from featcache.errors import HeadError
from featcache.training.baseline import LogisticBaseline


def blobs(n_per_class: int, k: int, dim: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (k, dim))
    y = np.repeat(np.arange(k), n_per_class)
    x = (centres[y] + rng.normal(0, 1.5, (len(y), dim))).astype(np.float32)
    return x, y


@pytest.fixture(scope="module")
def three_class():
    x, y = blobs(40, 3)
    xv, yv = blobs(15, 3, seed=1)
    return x, y, xv, yv, LogisticBaseline(cs=(0.001, 0.1, 10.0)).fit(x, y, xv, yv)


def test_c_is_the_grid_value_with_best_validation_accuracy(three_class):
    *_, model = three_class
    assert model.cs_.tolist() == [0.001, 0.1, 10.0]
    assert model.C_ == model.cs_[int(np.argmax(model.val_accuracy_))]
    assert model.coef_.shape == (3, 6) and model.intercept_.shape == (3,)


def test_probabilities_match_sklearn(three_class):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y, xv, _, model = three_class
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=model.C_, max_iter=1000).fit(scaler.transform(x), y)
    proba = model.predict_proba(xv)
    assert proba.shape == (len(xv), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    # the same optimum up to the solver tolerance (the baseline warm-starts along the C grid)
    np.testing.assert_allclose(proba, reference.predict_proba(scaler.transform(xv)), atol=1e-2)


def test_two_classes_give_two_columns_like_sklearn():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = blobs(30, 2, seed=3)
    xv, yv = blobs(10, 2, seed=4)
    model = LogisticBaseline(cs=(1.0,)).fit(x, y, xv, yv)
    scaler = StandardScaler().fit(x)
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x), y)
    np.testing.assert_allclose(model.predict_proba(xv), reference.predict_proba(scaler.transform(xv)), atol=1e-6)


def test_classes_missing_from_train_get_zero_probability():
    x, y = blobs(20, 2)
    model = LogisticBaseline(cs=(1.0,)).fit(x, y, x, y, n_classes=3)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), 3) and np.all(proba[:, 2] == 0)


def test_save_and_load_predict_the_same_without_pickle(three_class, tmp_path):
    *_, xv, _, model = three_class
    path = model.save(tmp_path / "baseline.npz", {"class_names": ["a", "b", "c"]})
    with np.load(path, allow_pickle=False) as data:
        assert all(data[name].dtype != object for name in data.files)
    with zipfile.ZipFile(path) as archive:
        assert all(name.endswith(".npy") for name in archive.namelist())
    loaded = LogisticBaseline.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(xv), model.predict_proba(xv))
    assert loaded.C_ == model.C_ and loaded.metadata_["class_names"] == ["a", "b", "c"]


def test_load_refuses_what_is_not_a_baseline(tmp_path):
    with pytest.raises(HeadError, match="no saved baseline"):
        LogisticBaseline.load(tmp_path / "none.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(HeadError, match="not a readable featcache baseline"):
        LogisticBaseline.load(tmp_path / "junk.npz")
    arrays = {n: np.zeros(1) for n in ("coef", "intercept", "classes", "mean", "scale", "cs", "val_accuracy")}
    np.savez(tmp_path / "other.npz", meta=np.asarray(json.dumps({"format": "other"})), **arrays)
    with pytest.raises(HeadError, match="not a featcache baseline"):
        LogisticBaseline.load(tmp_path / "other.npz")


def test_streaming_fit_learns_from_batches_and_saves_as_plain_arrays(three_class, tmp_path):
    x, y, xv, yv, full = three_class

    def train(epoch):
        order = np.random.default_rng(epoch).permutation(len(y))
        return ((x[order[i : i + 16]], y[order[i : i + 16]]) for i in range(0, len(y), 16))

    def validation():
        return iter([(xv[:20], yv[:20]), (xv[20:], yv[20:])])

    model = LogisticBaseline(alphas=(1e-1, 1e-2, 1e-3), sgd_epochs=8, seed=0).fit_streaming(train, validation, 4)
    assert model.solver_ == "sgd" and model.alpha_ in (1e-1, 1e-2, 1e-3)
    assert model.coef_.shape == (3, 6) and model.classes_.tolist() == [0, 1, 2]
    np.testing.assert_allclose(model.mean_, x.mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.scale_, x.std(axis=0), rtol=1e-4)
    assert model.C_ == pytest.approx(1 / (model.alpha_ * len(y)))
    assert model.val_accuracy_.max() == pytest.approx(np.mean(model.predict(xv) == yv))
    assert np.mean(model.predict(xv) == yv) >= np.mean(full.predict(xv) == yv) - 0.1
    proba = model.predict_proba(xv)
    assert proba.shape == (len(yv), 4) and np.all(proba[:, 3] == 0)
    loaded = LogisticBaseline.load(model.save(tmp_path / "sgd.npz"))
    assert loaded.solver_ == "sgd" and loaded.alpha_ == model.alpha_
    np.testing.assert_array_equal(loaded.predict_proba(xv), proba)
