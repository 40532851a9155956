"""The Python API: one function per command, taking the command's options as keyword arguments."""

from __future__ import annotations

from pathlib import Path

from featcache.config import DEFAULT_CACHE, DEFAULT_COMPARE_DIR, DEFAULT_HEAD_DIR, ExtractConfig
from featcache.extractor import ExtractResult


def extract(
    data_dir: str | Path,
    output: str | Path = DEFAULT_CACHE,
    *,
    progress: bool = False,
    backbone=None,
    **options,
) -> ExtractResult:
    """Extract the feature cache ``output`` from the images of ``data_dir``.

    ``options`` are the fields of :class:`featcache.config.ExtractConfig` (``image_size``,
    ``batch_size``, ``weights``, ``manifest``, ``val_fraction``, ``test_fraction``,
    ``interpolation``, ``strict``, ``overwrite``, ``workers``). ``backbone`` replaces the
    frozen Xception (tests pass a small fake).
    """
    from featcache.extractor import extract as run

    config = ExtractConfig(data_dir=Path(data_dir), output=Path(output), **options)
    return run(config, backbone=backbone, progress=progress)


def predict(
    images,
    head: str | Path,
    *,
    top_k: int = 3,
    batch_size: int = 32,
    weights: str | None = None,
    workers: int = 2,
    backbone=None,
    progress: bool = False,
):
    """Classify ``images`` (files, or folders searched recursively) with the trained head in ``head``.

    The images are decoded, resized and preprocessed exactly as the head's cache recorded, and
    embedded by the backbone with the same weights (``weights`` overrides where to find them;
    other weights are refused). Returns a :class:`featcache.predictor.PredictResult`; unreadable
    files are predictions with an ``error``, not exceptions. ``backbone`` replaces Xception.
    """
    from featcache.config import PredictConfig
    from featcache.predictor import predict as run

    paths = [images] if isinstance(images, (str, Path)) else list(images)
    config = PredictConfig(tuple(paths), Path(head), top_k, batch_size, weights, workers)
    return run(config, backbone=backbone, progress=progress)


def export(head: str | Path, out: str | Path, *, format: str = "keras", weights: str | None = None, backbone=None):
    """Write the head in ``head`` with its preprocessing and frozen backbone as one model at ``out``.

    ``format`` is ``keras`` (a ``.keras`` file, loadable with ``keras.saving.load_model`` in safe
    mode) or ``saved_model`` (a TensorFlow SavedModel folder). Returns a
    :class:`featcache.exporter.ExportResult`.
    """
    from featcache.config import ExportConfig
    from featcache.exporter import export as run

    return run(ExportConfig(Path(head), Path(out), format, weights), backbone=backbone)


def verify(
    cache: str | Path = DEFAULT_CACHE,
    *,
    sample: int = 32,
    tolerance: float = 1e-4,
    rel_tolerance: float = 1e-3,
    seed: int = 0,
    weights: str | None = None,
    batch_size: int = 32,
    data_dir: str | Path | None = None,
    backbone=None,
):
    """Recompute ``sample`` random rows of ``cache`` with the live model and compare with the stored vectors.

    Returns a :class:`featcache.verifier.VerifyResult`; ``result.passed`` is False when the largest
    absolute difference exceeds ``tolerance``, or the largest difference relative to the row's
    largest stored value exceeds ``rel_tolerance``; ``result.causes`` names the likely reasons.
    """
    from featcache.config import VerifyConfig
    from featcache.verifier import verify as run

    config = VerifyConfig(Path(cache), sample, tolerance, rel_tolerance, seed, weights, batch_size, data_dir)
    return run(config, backbone=backbone)


def train_head(
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_HEAD_DIR,
    *,
    tensorboard: str | Path | None = None,
    **options,
):
    """Train a Keras head on the cached vectors of ``cache`` and save it into the folder ``out``.

    ``options`` are the fields of :class:`featcache.head.HeadConfig` (``lr``, ``batch_size``,
    ``epochs``, ``inner``, ``dropout``, ``seed``, ``early_stopping``, ``val_fraction``);
    ``tensorboard`` is a log folder. Returns a :class:`featcache.head.HeadResult`.
    """
    from featcache.head import HeadConfig
    from featcache.head import train_head as run

    return run(cache, out, HeadConfig(**options), tensorboard=tensorboard)


def compare(
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_COMPARE_DIR,
    *,
    head: str | Path | None = None,
    **options,
):
    """Compare the Keras head with a tuned logistic baseline on the same splits of ``cache``.

    The head is trained with ``options`` (as for :func:`train_head`), or loaded from the folder
    ``head``. The report, figures and both models go into ``out``. Returns a
    :class:`featcache.comparison.CompareResult`.
    """
    from featcache.comparison import compare as run
    from featcache.head import HeadConfig

    return run(cache, out, HeadConfig(**options), head=head)
