"""What the lesson's grid cannot go below on this machine: the arithmetic of its 1000-unit runs alone.

    python -m benchmarks.sweep_floor [--train-rows 3068] [--epochs 10] [--seeds 3]

Of the grid's 192 runs, 48 (4 learning rates x 4 dropouts x 3 seeds) have a Dense(1000) layer on
2048-d vectors: 2.06 M weights each, updated by Adam after every batch of 32. Per step and run that
is two matrix products (forward, and the kernel's gradient; the input is data, so its gradient is
never needed) and one Adam update of every weight. This measures, with TensorFlow on this CPU, the
seconds of one such step (the two products, then ``ResourceApplyAdam`` on the 2048x1000 kernel,
the kernel featcache's sweep uses), each the median of 50 after 10
warm-up calls, on one thread, and multiplies by the steps of those 48 runs divided by the cores
(one single-threaded worker per core, as ``featcache sweep`` runs them; on 2 cores that beats one
process with two threads, whose small products scale poorly): a floor for the grid however its
runs are grouped or fused, since no run's arithmetic is shared with another's (each has its own
weights).
"""

from __future__ import annotations

import statistics
import time

import click
import numpy as np


def median_seconds(fn, warmup: int = 10, rounds: int = 50) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@click.command()
@click.option("--train-rows", type=int, default=3068, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True)
@click.option("--batch", type=int, default=32, show_default=True)
def main(train_rows, epochs, seeds, batch):
    """Seconds of one training step of a Dense(2048 -> 1000) run, and the floor of the grid's 48 such runs."""
    import os

    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cores = os.cpu_count() or 1

    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, 2048), dtype=np.float32))
    w = tf.Variable(rng.standard_normal((2048, 1000), dtype=np.float32) * 0.02)
    m, v = tf.Variable(tf.zeros_like(w)), tf.Variable(tf.zeros_like(w))
    g_out = tf.constant(rng.standard_normal((batch, 1000), dtype=np.float32))

    @tf.function
    def products():
        h = tf.matmul(x, w)  # forward
        gw = tf.matmul(x, g_out, transpose_a=True)  # gradient of the kernel
        return h, gw

    grad = tf.constant(rng.standard_normal((2048, 1000), dtype=np.float32))

    @tf.function
    def adam():
        tf.raw_ops.ResourceApplyAdam(
            var=w.handle, m=m.handle, v=v.handle, beta1_power=0.9, beta2_power=0.999, lr=0.001,
            beta1=0.9, beta2=0.999, epsilon=1e-7, grad=grad,
        )  # fmt: skip

    matmul_s, adam_s = median_seconds(products), median_seconds(adam)
    steps = -(-train_rows // batch) * epochs
    runs = 4 * 4 * seeds
    floor = (matmul_s + adam_s) * steps * runs / cores
    flops = 2 * 2 * batch * 2048 * 1000 / matmul_s / 1e9
    click.echo(
        f"one step of a Dense(2048->1000) run, batch {batch}: products {matmul_s * 1e3:.2f} ms ({flops:.0f} GFLOP/s), "
        f"Adam update {adam_s * 1e3:.2f} ms (median of 50, one thread)\n"
        f"{runs} such runs x {steps} steps ({train_rows} rows, {epochs} epochs) over {cores} cores: "
        f"{floor:.0f} s = {floor / 60:.1f} min, "
        f"before any other run of the grid, any validation pass or TensorFlow's start-up"
    )


if __name__ == "__main__":
    main()
