"""The scikit-learn baseline: standardized vectors + multinomial logistic regression, C tuned on validation.

Splits too large for memory get a streaming fit instead: a ``StandardScaler`` fitted with
``partial_fit`` over batches, then ``SGDClassifier(loss="log_loss")`` (one-vs-rest, constant
step) with ``partial_fit`` epochs over the batches, alpha chosen on validation.

Either is saved as plain arrays in one ``.npz`` file (no pickle): ``coef`` (k, dim),
``intercept`` (k,), ``classes`` (k,) class indices, ``mean`` and ``scale`` (dim,) of the
standardization, the C grid (for SGD, the C of each alpha) and its validation accuracies, and
``meta`` (a JSON string, with ``solver`` lbfgs or sgd and SGD's ``alpha``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from featcache.errors import HeadError
from featcache.training.metrics import softmax

log = logging.getLogger(__name__)

BASELINE_FORMAT, BASELINE_FORMAT_VERSION = "featcache-logistic", 1
C_GRID = tuple(float(c) for c in np.logspace(-4, 1, 6))  # 1e-4, 1e-3, ..., 10
#: SGD's regularization strengths, strongest first (alpha = 1 / (C * n_train)); ties go to the stronger
ALPHA_GRID = (1e-3, 1e-4, 1e-5)
SGD_EPOCHS = 5
#: SGD's constant step on standardized vectors. sklearn's default "optimal" schedule starts with
#: steps so large that the logits reach the hundreds: on the clothing data its validation accuracy
#: is as good but its log loss is 5 and more, against 0.65 with this step (lbfgs: 0.60).
SGD_ETA0 = 1e-3
ARRAYS = ("coef", "intercept", "classes", "mean", "scale", "cs", "val_accuracy")


class LogisticBaseline:
    """Standardized features + multinomial ``LogisticRegression``; C chosen on a validation split.

    Parameters
    ----------
    cs : sequence of float
        The grid of inverse regularization strengths tried, smallest first; ties on validation
        accuracy go to the smaller C.
    max_iter : int
        lbfgs iterations per C.
    alphas : sequence of float
        SGD's regularization strengths tried by :meth:`fit_streaming`, strongest first.
    sgd_epochs : int
        Passes over the train batches of :meth:`fit_streaming`.
    seed : int
        Seed of SGD's shuffling within each batch.
    """

    def __init__(self, cs=C_GRID, max_iter: int = 1000, alphas=ALPHA_GRID, sgd_epochs: int = SGD_EPOCHS, seed: int = 0):
        self.cs = cs
        self.max_iter = max_iter
        self.alphas = alphas
        self.sgd_epochs = sgd_epochs
        self.seed = seed

    def fit(self, x, y, x_val, y_val, n_classes: int | None = None) -> LogisticBaseline:
        """Fit on ``x`` float (n, dim) / ``y`` int (n,), pick C by accuracy on ``x_val`` / ``y_val``.

        ``n_classes`` is the number of columns of ``predict_proba`` (default: the largest label + 1).
        """
        from sklearn.linear_model import LogisticRegression
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x)
        xs, xv = scaler.transform(x), scaler.transform(x_val)
        model = LogisticRegression(max_iter=self.max_iter, warm_start=True)  # warm start walks the C path
        cs = sorted(float(c) for c in self.cs)
        scores, best = [], None
        for c in cs:
            _fit_quietly(model.set_params(C=c), xs, y)
            scores.append(float(np.mean(model.predict(xv) == np.asarray(y_val))))
            if best is None or scores[-1] > best[0]:
                best = (scores[-1], c, model.coef_.copy(), model.intercept_.copy())
        self.cs_, self.val_accuracy_ = np.asarray(cs), np.asarray(scores)
        self.C_ = best[1]
        self.classes_ = model.classes_.astype(np.int64)
        self.coef_, self.intercept_ = _multiclass(best[2], best[3])
        self.mean_, self.scale_ = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        self.n_classes_ = int(n_classes or max(int(np.max(y)), int(np.max(y_val))) + 1)
        self.solver_, self.alpha_, self.metadata_ = "lbfgs", None, {}
        log.info("logistic baseline: C=%g (validation accuracy %.4f)", self.C_, best[0])
        return self

    def fit_streaming(self, train, validation, n_classes: int) -> LogisticBaseline:
        """Fit from batches, holding one at a time: a streaming scaler, then SGD epochs, alpha by validation.

        ``train(epoch)`` yields (x float32 (b, dim), y int (b,)) batches covering the train split
        once (shuffled as epoch ``epoch`` wants); ``validation()`` yields the validation split's.
        The result predicts and saves as :meth:`fit`'s; ``C_`` is the equivalent 1 / (alpha n_train).
        """
        from sklearn.linear_model import SGDClassifier

        scaler, classes = _streaming_scaler(train(0))
        mean, scale = scaler.mean_.astype(np.float32), scaler.scale_.astype(np.float32)
        models = [
            SGDClassifier(loss="log_loss", alpha=a, learning_rate="constant", eta0=SGD_ETA0, random_state=self.seed)
            for a in self.alphas
        ]
        for epoch in range(self.sgd_epochs):
            for x, y in train(epoch):
                for model in models:
                    model.partial_fit((x - mean) / scale, y, classes=classes)
        scores = _accuracies(models, ((((x - mean) / scale), y) for x, y in validation()))
        best = int(np.argmax(scores))  # the first best: the strongest regularization
        n_train = int(scaler.n_samples_seen_)
        self.alphas_ = np.asarray(self.alphas, dtype=np.float64)
        self.cs_, self.val_accuracy_ = 1.0 / (self.alphas_ * n_train), np.asarray(scores)
        self.C_, self.alpha_, self.solver_ = float(self.cs_[best]), float(self.alphas_[best]), "sgd"
        self.classes_ = classes.astype(np.int64)
        self.coef_, self.intercept_ = _multiclass(models[best].coef_, models[best].intercept_)
        self.mean_, self.scale_ = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        self.n_classes_, self.metadata_ = int(n_classes), {}
        log.info("streaming logistic baseline: alpha=%g (validation accuracy %.4f)", self.alpha_, scores[best])
        return self

    def decision_function(self, x) -> np.ndarray:
        """Logits float64 (n, len(classes_)) of the classes seen in training."""
        z = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        return z @ self.coef_.T + self.intercept_

    def predict_proba(self, x) -> np.ndarray:
        """Probabilities float64 (n, n_classes_); classes absent from training get 0."""
        out = np.zeros((len(x), self.n_classes_))
        out[:, self.classes_] = softmax(self.decision_function(x))
        return out

    def predict(self, x) -> np.ndarray:
        """Class indices int64 (n,)."""
        return np.argmax(self.predict_proba(x), axis=1)

    def save(self, path: str | Path, metadata: dict | None = None) -> Path:
        """Write the fitted arrays and ``metadata`` (JSON values) to ``path`` (.npz), atomically."""
        path = Path(path)
        meta = {
            "format": BASELINE_FORMAT,
            "format_version": BASELINE_FORMAT_VERSION,
            "C": self.C_,
            "n_classes": self.n_classes_,
            "max_iter": self.max_iter,
            "solver": self.solver_,
            **({"alpha": self.alpha_} if self.alpha_ is not None else {}),
            **(metadata or {}),
        }
        arrays = {name: getattr(self, f"{name}_") for name in ARRAYS}
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.asarray(json.dumps(meta)), **arrays)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> LogisticBaseline:
        """A baseline saved by :meth:`save`, ready to predict (read without pickle)."""
        path = Path(path)
        if not path.is_file():
            raise HeadError(f"no saved baseline at {path}; run featcache compare to fit one")
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                arrays = {name: np.asarray(data[name]) for name in ARRAYS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise HeadError(
                f"{path} is not a readable featcache baseline ({exc}); run featcache compare again"
            ) from None
        if meta.get("format") != BASELINE_FORMAT or int(meta.get("format_version", 0)) > BASELINE_FORMAT_VERSION:
            raise HeadError(f"{path} is not a featcache baseline of a version this featcache reads")
        self = cls(cs=tuple(arrays["cs"].tolist()), max_iter=int(meta.get("max_iter", 1000)))
        for name, value in arrays.items():
            setattr(self, f"{name}_", value)
        self.C_, self.n_classes_, self.metadata_ = float(meta["C"]), int(meta["n_classes"]), meta
        self.solver_, self.alpha_ = meta.get("solver", "lbfgs"), meta.get("alpha")
        return self


def _streaming_scaler(batches):
    """A StandardScaler fitted batch by batch, and the sorted classes seen: int64 (k,)."""
    from sklearn.preprocessing import StandardScaler

    scaler, classes = StandardScaler(), np.zeros(0, dtype=np.int64)
    for x, y in batches:
        scaler.partial_fit(x)
        classes = np.union1d(classes, y)
    return scaler, classes


def _accuracies(models, batches) -> list[float]:
    """Accuracy of each model over all (x, y) batches."""
    right, seen = np.zeros(len(models)), 0
    for x, y in batches:
        right += [np.sum(model.predict(x) == y) for model in models]
        seen += len(y)
    return (right / max(seen, 1)).tolist()


def _fit_quietly(model, x, y) -> None:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        log.warning("logistic regression with C=%g stopped at max_iter before converging", model.C)


def _multiclass(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-class sklearn models keep one row w; softmax over (-w/2, +w/2) gives the same probabilities."""
    if coef.shape[0] == 1:
        return np.vstack([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    return coef.astype(np.float64), intercept.astype(np.float64)
