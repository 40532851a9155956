"""Several heads trained at once on the same batches, each as ``fit_head`` trains it alone.

A branch is one head configuration (learning rate, inner size, dropout) of one seed. Branches of
one seed see the same batches in the same order (the order depends on the seed only), so one pass
over the data serves them all. One compiled TensorFlow step runs every branch's own Keras head
forward (its Dropout layers draw from their own seed generators, as in ``fit``), takes each
branch's gradient of its own loss (Keras' ``CategoricalCrossentropy(from_logits=True)``), and
updates its weights with TensorFlow's fused Adam kernel (``ResourceApplyAdam``: Keras' Adam
formula in one pass over the weights, where Keras' optimizer makes about ten). Each branch starts
from the weights ``fit_head`` would give it — the seed set, then the head built — so a branch's
history is ``fit_head``'s for that configuration, up to float rounding (Keras rounds 1 - beta to
float32 from Python, the kernel in float32: a relative 2e-7 on Adam's two averaging rates).

The epoch figures are Keras': loss and accuracy are means over the epoch's rows of each batch's
mean loss and of argmax agreement (training loss with dropout on), validation in inference mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featcache.config import HeadConfig
from featcache.training.head import EVAL_BATCH_ROWS, build_head
from featcache.training.head_files import HISTORY_KEYS, import_keras
from featcache.training.splits import Splits

#: Keras' Adam defaults, which ``fit_head`` uses
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7


@dataclass(frozen=True)
class Branch:
    """One head configuration: Adam's learning rate, the inner Dense size (0: none), the dropout rate."""

    lr: float
    inner: int
    dropout: float

    def head_config(self, seed: int) -> HeadConfig:
        return HeadConfig(lr=self.lr, inner=(self.inner,) if self.inner else (), dropout=self.dropout, seed=seed)

    def weights(self, feature_dim: int, n_classes: int) -> int:
        """How many weights the branch trains."""
        if not self.inner:
            return (feature_dim + 1) * n_classes
        return (feature_dim + 1) * self.inner + (self.inner + 1) * n_classes


@dataclass
class BranchFit:
    """A trained branch: its Keras head (last epoch's weights) and Keras-style per-epoch history."""

    branch: Branch
    model: object
    history: dict[str, list[float]]


def train_branches(splits: Splits, branches: list[Branch], seed: int, epochs: int, batch_size: int) -> list[BranchFit]:
    """Train every branch for ``epochs`` on the batches ``fit_head`` would draw with ``seed``."""
    keras = import_keras()
    models = [_initial_head(splits, b, seed) for b in branches]
    trainer = _Trainer(keras, models, [b.lr for b in branches], len(splits.class_names))
    train = splits.batches(splits.train, batch_size, shuffle=True, seed=seed)
    validation = splits.batches(splits.validation, max(batch_size, EVAL_BATCH_ROWS))
    history = np.zeros((len(branches), epochs, len(HISTORY_KEYS)))
    try:
        for epoch in range(epochs):
            history[:, epoch, :2] = _epoch(train, epoch, trainer.step)
            history[:, epoch, 2:] = _epoch(validation, epoch, trainer.evaluate)
    finally:
        train.vectors.close()
        validation.vectors.close()
    curves = [{key: history[i, :, j].tolist() for j, key in enumerate(HISTORY_KEYS)} for i in range(len(branches))]
    return [BranchFit(b, m, c) for b, m, c in zip(branches, models, curves)]


def _initial_head(splits: Splits, branch: Branch, seed: int):
    """The head ``fit_head`` starts from: the same seed, then the same model built."""
    keras = import_keras()
    keras.utils.set_random_seed(seed)
    return build_head(splits.feature_dim, len(splits.class_names), branch.head_config(seed))


def _epoch(batches, epoch: int, step) -> np.ndarray:
    """(branches, 2): each branch's mean loss and accuracy over one pass of ``batches``."""
    batches.start_epoch(epoch)
    total, rows = 0.0, 0
    for x, y in batches:
        total = total + step(x, y).numpy().astype(np.float64)
        rows += len(y)
    return total / rows


class _Trainer:
    """The compiled steps over all branches; Adam's moments held beside each weight."""

    def __init__(self, keras, models: list, lrs: list[float], n_classes: int):
        import tensorflow as tf

        self.models, self.n_classes = models, n_classes
        self.weights = [list(m.trainable_weights) for m in models]
        self.lrs = [tf.constant(lr, tf.float32) for lr in lrs]
        self.moments = [[(_zeros(tf, w), _zeros(tf, w)) for w in ws] for ws in self.weights]
        self.steps = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.loss = keras.losses.CategoricalCrossentropy(from_logits=True)
        self.step = tf.function(self._step, reduce_retracing=True)
        self.evaluate = tf.function(self._evaluate, reduce_retracing=True)

    def _scores(self, tf, logits, labels, y):
        """The batch's mean loss, and (2,): that loss times the rows, and the rows whose argmax is the label."""
        rows = tf.cast(tf.shape(y)[0], tf.float32)
        loss = self.loss(labels, logits)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, axis=-1), y), tf.float32))
        return loss, tf.stack([loss * rows, correct])

    def _step(self, x, y):
        import tensorflow as tf

        labels = tf.one_hot(y, self.n_classes, dtype=tf.float32)
        with tf.GradientTape() as tape:
            scored = [self._scores(tf, model(x, training=True), labels, y) for model in self.models]
            total = tf.add_n([loss for loss, _ in scored])
        grads = tape.gradient(total, [w for ws in self.weights for w in ws])
        t = tf.cast(self.steps + 1, tf.float32)
        beta_1_power, beta_2_power = tf.pow(tf.constant(BETA_1), t), tf.pow(tf.constant(BETA_2), t)
        at = 0
        for ws, moments, lr in zip(self.weights, self.moments, self.lrs):
            for w, (m, v) in zip(ws, moments):
                tf.raw_ops.ResourceApplyAdam(
                    var=w.handle, m=m.handle, v=v.handle, beta1_power=beta_1_power, beta2_power=beta_2_power,
                    lr=lr, beta1=BETA_1, beta2=BETA_2, epsilon=EPSILON, grad=grads[at],
                )  # fmt: skip
                at += 1
        self.steps.assign_add(1)
        return tf.stack([s for _, s in scored])

    def _evaluate(self, x, y):
        import tensorflow as tf

        labels = tf.one_hot(y, self.n_classes, dtype=tf.float32)
        return tf.stack([self._scores(tf, model(x, training=False), labels, y)[1] for model in self.models])


def _zeros(tf, weight):
    return tf.Variable(tf.zeros(weight.shape, weight.dtype), trainable=False)
