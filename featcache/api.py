"""The Python API: one function per command, taking the command's options as keyword arguments.

Each option is a field of the command's configuration (:mod:`featcache.config`, and
:class:`featcache.config.HeadConfig` for the head), where its default is declared once.
"""

from __future__ import annotations

from pathlib import Path

import featcache.cache.compact
import featcache.cache.summary
import featcache.config
import featcache.demo
import featcache.extraction.run
import featcache.serving.exporter
import featcache.serving.predictor
import featcache.serving.verifier
import featcache.training.backbone_comparison
import featcache.training.comparison
import featcache.training.head
import featcache.training.leaks
import featcache.training.sweep
from featcache.config import (
    DEFAULT_CACHE,
    DEFAULT_COMPARE_DIR,
    DEFAULT_HEAD_DIR,
    DEFAULT_LEAKS_DIR,
    DEFAULT_SWEEP_DIR,
    ExportConfig,
    ExtractConfig,
    HeadConfig,
    LeaksConfig,
    PredictConfig,
    VerifyConfig,
)
from featcache.errors import ConfigError


def extract(
    data_dir: str | Path, output: str | Path = DEFAULT_CACHE, *, progress: bool = False, backbone=None, **options
):
    """Extract the feature cache ``output`` from the images of ``data_dir``.

    ``options`` are the fields of :class:`featcache.config.ExtractConfig` (``image_size``,
    ``batch_size``, ``weights``, ``manifest``, ``val_fraction``, ``test_fraction``,
    ``interpolation``, ``exif_transpose``, ``precision``, ``runtime``, ``strict``, ``overwrite``,
    ``workers``, ``allow_outside``, ``assume_unchanged``, ``engine`` and ``ray_*``, ``augment``, ``augment_policy``,
    ``augment_seed``). ``backbone`` is a name of :data:`featcache.backbones.registry.REGISTRY`
    (``xception`` by default, ``resnet50v2``, ...) or a :class:`featcache.backbones.Backbone` object,
    which replaces the registered base (tests pass a small fake).
    Returns a :class:`featcache.extraction.run.ExtractResult`.
    """
    if isinstance(backbone, str):  # a name of the registry, as --backbone gives it
        options["backbone"], backbone = backbone, None
    config = ExtractConfig(data_dir=Path(data_dir), output=Path(output), **options)
    return featcache.extraction.run.extract(config, backbone=backbone, progress=progress)


def info(cache: str | Path = DEFAULT_CACHE):
    """What the cache at ``cache`` holds, without loading its vectors: a :class:`featcache.cache.summary.CacheInfo`."""
    return featcache.cache.summary.info(cache)


def compact(cache: str | Path = DEFAULT_CACHE):
    """Rewrite the shards of ``cache`` so each live vector is stored once, in few full shards (upgrading a
    format-1 cache); returns a :class:`featcache.cache.compact.CompactResult`."""
    return featcache.cache.compact.compact(cache)


def predict(images, head: str | Path, *, backbone=None, progress: bool = False, **options):
    """Classify ``images`` (files, or folders searched recursively) with the trained head in ``head``.

    ``options`` are the fields of :class:`featcache.config.PredictConfig` (``top_k``,
    ``batch_size``, ``weights``, ``workers``). The images are decoded, resized and preprocessed
    exactly as the head's cache recorded, and embedded by the backbone with the same weights
    (``weights`` overrides where to find them; other weights are refused). Returns a
    :class:`featcache.serving.predictor.PredictResult`; unreadable files are predictions with an
    ``error``, not exceptions. ``backbone`` replaces Xception.
    """
    paths = [images] if isinstance(images, (str, Path)) else list(images)
    config = PredictConfig(images=tuple(paths), head=Path(head), **options)
    return featcache.serving.predictor.predict(config, backbone=backbone, progress=progress)


def export(head: str | Path, out: str | Path, *, backbone=None, **options):
    """Write the head in ``head`` with its preprocessing and frozen backbone as one model at ``out``.

    ``options`` are the fields of :class:`featcache.config.ExportConfig`: ``format`` is ``keras``
    (a ``.keras`` file, loadable with ``keras.saving.load_model`` in safe mode) or ``saved_model``
    (a TensorFlow SavedModel folder), ``weights`` where to find the weights. Returns a
    :class:`featcache.serving.exporter.ExportResult`.
    """
    config = ExportConfig(head=Path(head), out=Path(out), **options)
    return featcache.serving.exporter.export(config, backbone=backbone)


def verify(cache: str | Path = DEFAULT_CACHE, *, backbone=None, **options):
    """Recompute a sample of rows of ``cache`` with the live model and compare with the stored vectors.

    ``options`` are the fields of :class:`featcache.config.VerifyConfig` (``sample``,
    ``tolerance``, ``rel_tolerance``, ``seed``, ``weights``, ``batch_size``, ``data_dir``).
    Returns a :class:`featcache.serving.verifier.VerifyResult`; ``result.passed`` is False when the
    largest absolute difference exceeds ``tolerance``, or the largest difference relative to the
    row's largest stored value exceeds ``rel_tolerance``; ``result.causes`` names the likely reasons.
    """
    config = VerifyConfig(cache=Path(cache), **options)
    return featcache.serving.verifier.verify(config, backbone=backbone)


def train_head(cache: str | Path = DEFAULT_CACHE, out: str | Path = DEFAULT_HEAD_DIR, *, tensorboard=None, **options):
    """Train a Keras head on the cached vectors of ``cache`` and save it into the folder ``out``.

    ``options`` are the fields of :class:`featcache.config.HeadConfig` (``lr``,
    ``batch_size``, ``epochs``, ``inner``, ``dropout``, ``seed``, ``early_stopping``,
    ``val_fraction``, ``memory_budget``: bytes or a size such as ``"1GB"``, above which the
    splits are read from the cache in chunks); ``tensorboard`` is a log folder. Returns a
    :class:`featcache.training.head.HeadResult`.
    """
    return featcache.training.head.train_head(cache, out, HeadConfig(**options), tensorboard=tensorboard)


def sweep(cache: str | Path = DEFAULT_CACHE, out: str | Path = DEFAULT_SWEEP_DIR, *, progress: bool = False, **options):
    """Train every configuration of a grid of heads on ``cache`` for several seeds, rank them, keep the best.

    ``options`` are the fields of :class:`featcache.config.SweepConfig` (``lr``, ``inner``, ``dropout``
    as sequences, ``seeds``, ``epochs``, ``batch_size``, ``jobs``, ``cs``, ``heatmap``, ``val_fraction``,
    ``memory_budget``). Results go into the folder ``out``; returns a
    :class:`featcache.training.sweep.SweepResult`.
    """
    return featcache.training.sweep.run_sweep(cache, out, featcache.config.SweepConfig(**options), progress=progress)


def leaks(cache: str | Path = DEFAULT_CACHE, out: str | Path = DEFAULT_LEAKS_DIR, *, progress: bool = False, **options):
    """Exact and near duplicates across the splits of ``cache``, written into ``out`` (leaks.json, leaks.csv).

    ``options`` are the fields of :class:`featcache.config.LeaksConfig` (``candidate_cosine``,
    ``max_phash_distance``, ``data_dir``). Returns a :class:`featcache.training.leaks.LeaksResult`.
    """
    result = featcache.training.leaks.find_leaks(cache, LeaksConfig(**options), progress=progress)
    featcache.training.leaks.write_leaks(result, Path(out))
    return result


def compare(cache: str | Path = DEFAULT_CACHE, out: str | Path = DEFAULT_COMPARE_DIR, *, head=None, **options):
    """Compare the Keras head with a tuned logistic baseline on the same splits of ``cache``.

    The head is trained with ``options`` (as for :func:`train_head`), or loaded from the folder
    ``head``. Above ``memory_budget`` the baseline is a streaming SGD logistic regression, and
    the report says so. The report, figures and both models go into ``out``. Returns a
    :class:`featcache.training.comparison.CompareResult`. Given several caches (a list, e.g. one per
    backbone), each is compared in a folder of its own and one table sets them side by side: a
    :class:`featcache.training.backbone_comparison.CachesResult`.
    """
    if isinstance(cache, (list, tuple)):
        if len(cache) > 1:
            if head is not None:
                raise ConfigError("--head compares one cache; leave it out to compare several caches")
            return featcache.training.backbone_comparison.compare_caches(cache, out, HeadConfig(**options))
        cache = cache[0] if cache else DEFAULT_CACHE
    return featcache.training.comparison.compare(cache, out, HeadConfig(**options), head=head)


def demo_data(cache_dir: str | Path | None = None) -> Path:
    """The folder of images ``make demo`` extracts: ``$FEATCACHE_DATA``, else clothing-dataset-small
    downloaded once into Keras' cache folder (or ``cache_dir``); see :func:`featcache.demo.data_dir`."""
    return featcache.demo.data_dir(cache_dir)
