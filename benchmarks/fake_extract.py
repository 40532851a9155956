"""``featcache.api.extract`` with a fake backbone, in a process of its own, for its peak memory.

    python -m benchmarks.fake_extract DATA_DIR OUT.h5

Without TensorFlow (whose ~2 GB would hide the pipeline's own growth) the process's peak
resident memory is what featcache itself holds: paths, hashes, decoded batches, parts, and the
vectors (2048 float32 per image, as Xception + GAP gives) when the cache is assembled.
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np

DIM = 2048


class FakeBackbone:
    """Stands in for Xception + GAP: the first 2048 pixel values of each image as its vector, instantly."""

    dim = DIM

    def identity(self) -> dict:
        return {"backbone": "benchmark-fake", "pooling": "none", "weights_id": "none", "feature_dim": DIM}

    def build(self):
        return embed


def embed(batch: np.ndarray) -> np.ndarray:
    """uint8 (n, s, s, 3) -> float32 (n, 2048)."""
    return batch.reshape(len(batch), -1)[:, :DIM].astype(np.float32)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@click.command()
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
def main(data, out):
    """Extract DATA into OUT with the fake backbone; print rows and peak RSS as JSON."""
    from featcache.api import extract

    result = extract(data, out, backbone=FakeBackbone(), overwrite=True)
    click.echo(json.dumps({"rows": result.rows, "computed": result.computed, "vm_hwm_mb": round(peak_rss_mb(), 1)}))


if __name__ == "__main__":
    main()
