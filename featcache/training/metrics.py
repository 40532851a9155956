"""Probabilities from logits, their scores, and whether two classifiers differ on the same rows."""

from __future__ import annotations

import numpy as np

BOOTSTRAP_ROUNDS = 2000
ALPHA = 0.05


def evaluate(proba: np.ndarray, y: np.ndarray, class_names: list[str]) -> dict:
    """Accuracy, macro-F1, log loss, per-class precision/recall and the confusion matrix.

    ``proba`` is float (m, k) with rows summing to 1, ``y`` int (m,) class indices into
    ``class_names``; classes absent from ``y`` still get a row and a column.
    """
    from sklearn import metrics

    labels = list(range(len(class_names)))
    pred = np.argmax(proba, axis=1)
    precision, recall, _, support = metrics.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    return {
        "rows": int(len(y)),
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(metrics.f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "log_loss": float(metrics.log_loss(y, np.clip(proba, 1e-15, 1.0), labels=labels)),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "support": int(s)}
            for name, p, r, s in zip(class_names, precision, recall, support)
        },
        "confusion_matrix": metrics.confusion_matrix(y, pred, labels=labels).tolist(),
    }


def paired_difference(y: np.ndarray, pred_a: np.ndarray, pred_b: np.ndarray, seed: int = 0) -> dict:
    """Is the accuracy of A minus that of B on the same rows more than chance?

    McNemar's exact test on the rows only one of them gets right, and a paired bootstrap 95%
    interval of the accuracy difference (``BOOTSTRAP_ROUNDS`` resamples, seeded).
    """
    from scipy.stats import binomtest

    right_a, right_b = np.asarray(pred_a) == y, np.asarray(pred_b) == y
    only_a, only_b = int(np.sum(right_a & ~right_b)), int(np.sum(~right_a & right_b))
    p_value = binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    low, high = np.percentile(_bootstrap_differences(right_a, right_b, seed), [2.5, 97.5])
    return {
        "rows": int(len(y)),
        "accuracy_difference": float(right_a.mean() - right_b.mean()),
        "only_a_right": only_a,
        "only_b_right": only_b,
        "mcnemar_p_value": float(min(1.0, p_value)),
        "bootstrap_ci95": [float(low), float(high)],
        "significant": bool(p_value < ALPHA),
        "alpha": ALPHA,
    }


def _bootstrap_differences(right_a: np.ndarray, right_b: np.ndarray, seed: int) -> np.ndarray:
    """Accuracy of A minus B on BOOTSTRAP_ROUNDS resamples of the rows, drawn a block of rounds at a time so
    that memory stays near 32 MB whatever the number of rows (the draws are those of one big call)."""
    rng, n = np.random.default_rng(seed), len(right_a)
    block = max(1, min(BOOTSTRAP_ROUNDS, (4 << 20) // max(n, 1)))
    diffs = []
    for start in range(0, BOOTSTRAP_ROUNDS, block):
        resamples = rng.integers(0, n, size=(min(block, BOOTSTRAP_ROUNDS - start), n))
        diffs.append(right_a[resamples].mean(axis=1) - right_b[resamples].mean(axis=1))
    return np.concatenate(diffs)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float (m, k) logits, computed stably in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
