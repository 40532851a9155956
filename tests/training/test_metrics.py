"""Scores of probabilities and the paired significance test, on numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.training.metrics import evaluate, paired_difference


def test_evaluate_on_a_small_case():
    proba = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0], [0.1, 0.9, 0.0]])
    y = np.array([0, 1, 1, 1])
    scores = evaluate(proba, y, ["a", "b", "c"])
    assert scores["accuracy"] == 0.75 and scores["rows"] == 4
    assert scores["confusion_matrix"] == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert scores["per_class"]["a"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert scores["per_class"]["b"]["recall"] == pytest.approx(2 / 3)
    assert scores["per_class"]["c"]["support"] == 0
    f1_a, f1_b = 2 / 3, 0.8
    assert scores["macro_f1"] == pytest.approx((f1_a + f1_b + 0) / 3)
    assert scores["log_loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.9])))


def test_identical_predictions_are_not_significant():
    y = np.arange(50) % 3
    result = paired_difference(y, y, y)
    assert result["accuracy_difference"] == 0 and result["mcnemar_p_value"] == 1.0
    assert not result["significant"] and result["bootstrap_ci95"] == [0.0, 0.0]


def test_a_clear_difference_is_significant():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    good = y.copy()
    bad = np.where(rng.random(200) < 0.3, 1 - y, y)
    result = paired_difference(y, good, bad)
    assert result["accuracy_difference"] > 0.2 and result["only_b_right"] == 0
    assert result["significant"] and result["mcnemar_p_value"] < 1e-6
    low, high = result["bootstrap_ci95"]
    assert 0 < low < result["accuracy_difference"] < high


def test_mcnemar_counts_only_discordant_rows():
    y = np.zeros(10, dtype=int)
    a = np.array([0, 0, 0, 1, 1, 0, 0, 0, 0, 0])
    b = np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 0])
    result = paired_difference(y, a, b)
    assert (result["only_a_right"], result["only_b_right"]) == (2, 1)
    assert result["mcnemar_p_value"] == pytest.approx(1.0)  # 2 vs 1 is no evidence at all
