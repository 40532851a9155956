"""branches.py: heads trained together on the same batches, each against Keras' own fit of it alone."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.config import HeadConfig
from featcache.training.branches import Branch, train_branches
from featcache.training.head import fit_head
from featcache.training.splits import load_splits
from tests.support import augmented_cache, tiny_cache

BRANCHES = [Branch(0.01, 0, 0.0), Branch(0.01, 8, 0.5), Branch(0.1, 8, 0.0), Branch(0.1, 0, 0.5)]


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    cache = tiny_cache(tmp_path_factory.mktemp("branches"), counts={"train": 12, "validation": 4, "test": 2})
    return load_splits(cache, 0.2, None, with_test=False)


def _alone(splits, branch: Branch, seed: int, epochs: int):
    """Keras' model.fit of the branch's configuration, with Keras' Adam: the reference."""
    inner = (branch.inner,) if branch.inner else ()
    config = HeadConfig(lr=branch.lr, inner=inner, dropout=branch.dropout, epochs=epochs, batch_size=8, seed=seed)
    return fit_head(splits, config)


@pytest.mark.parametrize("seed", [0, pytest.param(3, marks=pytest.mark.slow)])  # seed 3 with the slow tests
def test_every_branch_learns_as_keras_fit_trains_its_configuration_alone(splits, seed):
    fits = train_branches(splits, BRANCHES, seed, epochs=4, batch_size=8)
    for fit in fits:
        alone = _alone(splits, fit.branch, seed, 4)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            np.testing.assert_allclose(fit.history[key], alone.history[key], rtol=1e-5, atol=1e-5, err_msg=key)
        if alone.best_epoch == 4:  # fit_head keeps its best epoch; the branch holds its last
            for mine, theirs in zip(fit.model.get_weights(), alone.model.get_weights()):
                np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-5)


def test_a_branch_learns_the_same_with_or_without_other_branches(splits):
    together = train_branches(splits, BRANCHES, 0, epochs=3, batch_size=8)[1]
    alone = train_branches(splits, [BRANCHES[1]], 0, epochs=3, batch_size=8)[0]
    assert together.history == alone.history
    assert all(np.array_equal(a, b) for a, b in zip(together.model.get_weights(), alone.model.get_weights()))


def test_branches_on_augmented_views_learn_as_keras_fit_on_them(tmp_path):
    cache, _ = augmented_cache(tmp_path, views=3)
    splits = load_splits(cache, 0.2, None, with_test=False, with_views=True)
    fit = train_branches(splits, [Branch(0.01, 8, 0.2)], 0, epochs=3, batch_size=8)[0]
    alone = fit_head(splits, HeadConfig(lr=0.01, inner=(8,), dropout=0.2, epochs=3, batch_size=8, with_views=True))
    np.testing.assert_allclose(fit.history["val_loss"], alone.history["val_loss"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fit.history["loss"], alone.history["loss"], rtol=1e-5, atol=1e-5)
