"""The Python API: one function per command, its options as keyword-only parameters.

Each option is a field of the command's configuration (:mod:`featcache.config`, and
:class:`featcache.config.HeadConfig` for the head), where its default is declared once; the
parameters here read their defaults from there. :func:`load` and :func:`dataset` hand a cache's
vectors to one's own code. A renamed parameter still takes its former name until the next release, with a
DeprecationWarning (:func:`featcache.config.renamed`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import featcache.backbones
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
import featcache.training.labels
import featcache.training.leaks
import featcache.training.loading
import featcache.training.sweep
from featcache.config import (
    DEFAULT_CACHE,
    DEFAULT_COMPARE_DIR,
    DEFAULT_HEAD_DIR,
    DEFAULT_LABELS_DIR,
    DEFAULT_LEAKS_DIR,
    DEFAULT_SWEEP_DIR,
    HEAD_FORMER_NAMES,
    SWEEP_FORMER_NAMES,
    ExportConfig,
    ExtractConfig,
    HeadConfig,
    LabelsConfig,
    LeaksConfig,
    PredictConfig,
    SweepConfig,
    VerifyConfig,
    renamed,
)
from featcache.errors import ConfigError

if TYPE_CHECKING:
    import keras


@renamed(output="out")
def extract(
    data_dir: str | Path,
    out: str | Path = ExtractConfig.output,
    *,
    backbone: str | featcache.backbones.Backbone = ExtractConfig.backbone,
    manifest: str | Path | None = ExtractConfig.manifest,
    image_size: int | None = ExtractConfig.image_size,
    interpolation: str = ExtractConfig.interpolation,
    exif_transpose: bool = ExtractConfig.exif_transpose,
    batch_size: int = ExtractConfig.batch_size,
    weights: str | None = ExtractConfig.weights,
    precision: str = ExtractConfig.precision,
    runtime: str | None = ExtractConfig.runtime,
    val_fraction: float = ExtractConfig.val_fraction,
    test_fraction: float = ExtractConfig.test_fraction,
    strict: bool = ExtractConfig.strict,
    overwrite: bool = ExtractConfig.overwrite,
    workers: int = ExtractConfig.workers,
    commit_seconds: float = ExtractConfig.commit_seconds,
    allow_outside: bool = ExtractConfig.allow_outside,
    assume_unchanged: bool = ExtractConfig.assume_unchanged,
    engine: str = ExtractConfig.engine,
    ray_address: str | None = ExtractConfig.ray_address,
    ray_actors: int | None = ExtractConfig.ray_actors,
    ray_cpus: float = ExtractConfig.ray_cpus,
    ray_gpus: float = ExtractConfig.ray_gpus,
    augment: int | None = ExtractConfig.augment,
    augment_policy: str | None = ExtractConfig.augment_policy,
    augment_seed: int | None = ExtractConfig.augment_seed,
    progress: bool = False,
) -> featcache.extraction.run.ExtractResult:
    """Extract the feature cache ``out`` from the images of ``data_dir``, or bring it up to date.

    Only images the cache lacks are computed; an interrupted run resumes where it stopped.

    Parameters
    ----------
    data_dir : str or Path
        train/, validation/ (or val/) and test/ folders of class folders, or class folders only (split by
        content hash), or the folder the paths of ``manifest`` are relative to. An fsspec URL
        (``s3://bucket/photos``, ``gs://``, ``az://``) reads the same layout from an object store.
    out : str or Path
        The HDF5 cache to write or update.
    backbone : str or Backbone
        A name of :data:`featcache.backbones.registry.REGISTRY` (``xception``, ``resnet50v2``, ...), or a
        :class:`featcache.backbones.Backbone` object that replaces the registered base (tests pass a fake).
    manifest : str or Path, optional
        A CSV file with columns ``path,label[,split]``, paths relative to ``data_dir``.
    image_size : int, optional
        Square input size in pixels; None: the backbone's (Xception: the recipe's 150).
    interpolation : str
        Pillow resize filter; ``nearest`` is what Keras' ``load_img`` uses.
    exif_transpose : bool
        Rotate images as their EXIF orientation says (Keras' ``load_img`` does not).
    batch_size : int
        Images per forward pass.
    weights : str, optional
        ``imagenet``, a weights file, or ``none`` (random); None: ``$FEATCACHE_WEIGHTS``, else ``imagenet``.
    precision : {"float32", "bfloat16"}
        float32 is exact; bfloat16 runs on OpenVINO with a bf16 hint.
    runtime : {"tensorflow", "openvino"}, optional
        Who runs the model; None: tensorflow for float32, openvino for bfloat16.
    val_fraction, test_fraction : float
        Shares of validation and test images when ``data_dir`` has class folders only.
    strict : bool
        Raise :class:`featcache.errors.BadImagesError` instead of quarantining files that cannot be used.
    overwrite : bool
        Replace a cache made with other settings.
    workers : int
        Image decoding threads.
    commit_seconds : float
        Seconds of computed vectors kept before they are committed as one shard; 0 commits every batch.
    allow_outside : bool
        Follow symlinks and manifest paths that lead out of ``data_dir``.
    assume_unchanged : bool
        Take files whose path the cache holds as unchanged, without reading their size and time.
    engine : {"local", "ray"}
        Embed in this process, or with actors on a Ray cluster.
    ray_address : str, optional
        The Ray cluster (``engine="ray"``); None: ``$RAY_ADDRESS``, else a local Ray for this run.
    ray_actors : int, optional
        Actors that embed; None: the cluster's CPUs divided by ``ray_cpus``.
    ray_cpus, ray_gpus : float
        CPUs and GPUs each Ray actor reserves.
    augment : int, optional
        Augmented views to keep per train image (0: none); None: as many as the cache has.
    augment_policy : str, optional
        ``lesson``, ``flip``, ``light`` or a JSON file of ``ImageDataGenerator`` parameters; None: the
        cache's, else ``lesson``.
    augment_seed : int, optional
        Seed of the views; None: the cache's, else 0.
    progress : bool
        Show a progress bar.

    Returns
    -------
    ExtractResult
        Rows per split and class, computed and reused, quarantined files, timings
        (:class:`featcache.extraction.run.ExtractResult`).
    """
    name, model = (backbone, None) if isinstance(backbone, str) else (ExtractConfig.backbone, backbone)
    config = ExtractConfig(
        data_dir=data_dir,
        output=Path(out),
        manifest=manifest,
        image_size=image_size,
        interpolation=interpolation,
        exif_transpose=exif_transpose,
        batch_size=batch_size,
        weights=weights,
        backbone=name,
        precision=precision,
        runtime=runtime,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        strict=strict,
        overwrite=overwrite,
        workers=workers,
        commit_seconds=commit_seconds,
        allow_outside=allow_outside,
        assume_unchanged=assume_unchanged,
        engine=engine,
        ray_address=ray_address,
        ray_actors=ray_actors,
        ray_cpus=ray_cpus,
        ray_gpus=ray_gpus,
        augment=augment,
        augment_policy=augment_policy,
        augment_seed=augment_seed,
    )
    return featcache.extraction.run.extract(config, backbone=model, progress=progress)


def info(cache: str | Path = DEFAULT_CACHE) -> featcache.cache.summary.CacheInfo:
    """What a cache holds, without loading its vectors.

    Parameters
    ----------
    cache : str or Path
        The cache to describe.

    Returns
    -------
    CacheInfo
        Rows per split and class, provenance, quarantine and unfinished work
        (:class:`featcache.cache.summary.CacheInfo`).
    """
    return featcache.cache.summary.info(cache)


def compact(cache: str | Path = DEFAULT_CACHE) -> featcache.cache.compact.CompactResult:
    """Rewrite the shards of a cache so each live vector is stored once, in few full shards.

    Reclaims the space of removed images and merges the small shards updates add; a cache of format 1 is
    upgraded. Safe to interrupt at any moment.

    Parameters
    ----------
    cache : str or Path
        The cache to rewrite.

    Returns
    -------
    CompactResult
        The shards and bytes before and after (:class:`featcache.cache.compact.CompactResult`).
    """
    return featcache.cache.compact.compact(cache)


def predict(
    images: str | Path | Iterable[str | Path],
    head: str | Path,
    *,
    top_k: int = PredictConfig.top_k,
    batch_size: int = PredictConfig.batch_size,
    weights: str | None = PredictConfig.weights,
    workers: int = PredictConfig.workers,
    backbone: featcache.backbones.Backbone | None = None,
    progress: bool = False,
) -> featcache.serving.predictor.PredictResult:
    """Classify images with a trained head.

    Each image is decoded, resized and preprocessed exactly as the head's cache recorded, and embedded by the
    backbone with the same weights.

    Parameters
    ----------
    images : str, Path or iterable of them
        Image files, or folders searched recursively.
    head : str or Path
        The folder of a head trained by :func:`train_head`.
    top_k : int
        Classes to give per image, best first.
    batch_size : int
        Images per forward pass.
    weights : str, optional
        Where to find the backbone's weights; None: the head's own (or ``$FEATCACHE_WEIGHTS``). Weights other
        than those the head was trained on are refused.
    workers : int
        Image decoding threads.
    backbone : Backbone, optional
        Replaces the registered base (tests pass a fake).
    progress : bool
        Show a progress bar.

    Returns
    -------
    PredictResult
        One prediction per image; a file that cannot be read is a prediction with an ``error``, not an
        exception (:class:`featcache.serving.predictor.PredictResult`).
    """
    paths = [images] if isinstance(images, (str, Path)) else list(images)
    config = PredictConfig(
        images=tuple(paths), head=Path(head), top_k=top_k, batch_size=batch_size, weights=weights, workers=workers
    )
    return featcache.serving.predictor.predict(config, backbone=backbone, progress=progress)


def export(
    head: str | Path,
    out: str | Path,
    *,
    format: str = ExportConfig.format,
    quantize: str = ExportConfig.quantize,
    check_images: Sequence[str | Path] = ExportConfig.check_images,
    weights: str | None = ExportConfig.weights,
    backbone: featcache.backbones.Backbone | None = None,
) -> featcache.serving.exporter.ExportResult:
    """Write a head with its preprocessing and frozen backbone as one model: pixels in, probabilities out.

    Parameters
    ----------
    head : str or Path
        The folder of a head trained by :func:`train_head`.
    out : str or Path
        A ``.keras`` file (loadable with ``keras.saving.load_model`` in safe mode), the folder of a
        TensorFlow SavedModel, a ``.tflite`` file (LiteRT) or an ``.onnx`` file (ONNX Runtime).
    format : {"keras", "saved_model", "tflite", "onnx"}
        What to write at ``out``; tflite needs ``featcache[tflite]``, onnx ``featcache[onnx]``.
    quantize : {"none", "dynamic", "float16"}
        For tflite: float32 weights, int8 weights (dynamic-range quantization) or float16 weights.
    check_images : sequence of str or Path
        Images or folders the written model is checked on, run by its own runtime against the predict
        path; empty: the validation split of the cache the head was trained on.
    weights : str, optional
        Where to find the backbone's weights; None: the head's own (or ``$FEATCACHE_WEIGHTS``).
    backbone : Backbone, optional
        Replaces the registered base (tests pass a fake).

    Returns
    -------
    ExportResult
        What was written and how closely it reproduces the head (:class:`featcache.serving.exporter.ExportResult`).
    """
    config = ExportConfig(
        head=Path(head),
        out=Path(out),
        format=format,
        quantize=quantize,
        check_images=tuple(check_images),
        weights=weights,
    )
    return featcache.serving.exporter.export(config, backbone=backbone)


def verify(
    cache: str | Path = VerifyConfig.cache,
    *,
    sample: int = VerifyConfig.sample,
    tolerance: float = VerifyConfig.tolerance,
    rel_tolerance: float = VerifyConfig.rel_tolerance,
    seed: int = VerifyConfig.seed,
    weights: str | None = VerifyConfig.weights,
    batch_size: int = VerifyConfig.batch_size,
    data_dir: str | Path | None = VerifyConfig.data_dir,
    backbone: featcache.backbones.Backbone | None = None,
) -> featcache.serving.verifier.VerifyResult:
    """Recompute a sample of rows of a cache with the live model and compare them with the stored vectors.

    Parameters
    ----------
    cache : str or Path
        The cache to check.
    sample : int
        Random rows to recompute.
    tolerance : float
        Largest absolute difference allowed.
    rel_tolerance : float
        Largest difference allowed relative to the row's largest stored value.
    seed : int
        Seed of the row sample.
    weights : str, optional
        Where to find the backbone's weights; None: ``$FEATCACHE_WEIGHTS`` or the weights the cache recorded.
    batch_size : int
        Images per forward pass.
    data_dir : str or Path, optional
        Where the images are; None: the folder the cache recorded.
    backbone : Backbone, optional
        Replaces the registered base (tests pass a fake).

    Returns
    -------
    VerifyResult
        ``passed`` is False when a difference exceeds ``tolerance`` or ``rel_tolerance``; ``causes`` names
        the likely reasons (:class:`featcache.serving.verifier.VerifyResult`).
    """
    config = VerifyConfig(
        cache=Path(cache),
        sample=sample,
        tolerance=tolerance,
        rel_tolerance=rel_tolerance,
        seed=seed,
        weights=weights,
        batch_size=batch_size,
        data_dir=data_dir,
    )
    return featcache.serving.verifier.verify(config, backbone=backbone)


@renamed(**HEAD_FORMER_NAMES)
def train_head(
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_HEAD_DIR,
    *,
    lr: float = HeadConfig.lr,
    batch_size: int = HeadConfig.batch_size,
    epochs: int = HeadConfig.epochs,
    inner: Sequence[int] = HeadConfig.inner,
    dropout: float = HeadConfig.dropout,
    seed: int = HeadConfig.seed,
    early_stopping: int | None = HeadConfig.early_stopping,
    holdout_fraction: float = HeadConfig.holdout_fraction,
    memory_budget: int | str | None = HeadConfig.memory_budget,
    with_views: bool = HeadConfig.with_views,
    drop_leaks: bool = HeadConfig.drop_leaks,
    drop_label_issues: int | str | Path | None = HeadConfig.drop_label_issues,
    tensorboard: str | Path | None = None,
) -> featcache.training.head.HeadResult:
    """Train a Keras head on the cached vectors and keep its best epoch.

    The head trains on the train split and is judged every epoch on the validation split (held out from
    train when the cache has none); the epoch with the best validation accuracy is kept.

    Parameters
    ----------
    cache : str or Path
        The cache to train on.
    out : str or Path
        The folder to save the head into (``head.keras``, ``head.json``, ``history.csv``, learning curves).
    lr : float
        Adam's learning rate (the recipe's 0.01).
    batch_size : int
        Vectors per training step.
    epochs : int
        Passes over the train split.
    inner : sequence of int
        Units of each Dense relu layer before the output; empty: vectors -> logits.
    dropout : float
        Dropout rate after each inner layer (on the input when there is none).
    seed : int
        Seed of initialisation and shuffling: the same seed gives the same history.
    early_stopping : int, optional
        Stop after this many epochs without a better validation accuracy; None: never.
    holdout_fraction : float
        Share of train rows held out for validation when the cache has no validation split.
    memory_budget : int or str, optional
        Bytes of vectors to hold in memory (or a size such as ``"1GB"``); above it the splits are read from
        the cache in chunks, with the same results. None: a quarter of the available memory.
    with_views : bool
        Train on the cache's augmented views (made by :func:`extract`'s ``augment``): each epoch shows each
        train image as its clean vector or one of its views, drawn uniformly.
    drop_leaks : bool
        Leave out the validation and test rows that :func:`leaks` finds in an earlier split.
    drop_label_issues : int, str or Path, optional
        Train without likely mislabelled train rows: the first N that :func:`labels` ranks (an int), or the
        paths in the ``path`` column of a CSV file (``labels.csv`` cut to the rows to drop).
    tensorboard : str or Path, optional
        Also write TensorBoard logs into this folder.

    Returns
    -------
    HeadResult
        Where the head is, its best epoch, history and metrics (:class:`featcache.training.head.HeadResult`).
    """
    config = HeadConfig(
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        inner=inner,
        dropout=dropout,
        seed=seed,
        early_stopping=early_stopping,
        holdout_fraction=holdout_fraction,
        memory_budget=memory_budget,
        with_views=with_views,
        drop_leaks=drop_leaks,
        drop_label_issues=drop_label_issues,
    )
    return featcache.training.head.train_head(cache, out, config, tensorboard=tensorboard)


@renamed(**SWEEP_FORMER_NAMES)
def sweep(
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_SWEEP_DIR,
    *,
    lr: Sequence[float] = SweepConfig.lr,
    inner: Sequence[int] = SweepConfig.inner,
    dropout: Sequence[float] = SweepConfig.dropout,
    seeds: int = SweepConfig.seeds,
    epochs: int = SweepConfig.epochs,
    batch_size: int = SweepConfig.batch_size,
    jobs: int | None = SweepConfig.jobs,
    baseline_c: Sequence[float] = SweepConfig.baseline_c,
    heatmap: tuple[str, str] = SweepConfig.heatmap,
    holdout_fraction: float = SweepConfig.holdout_fraction,
    memory_budget: int | str | None = SweepConfig.memory_budget,
    with_views: bool = SweepConfig.with_views,
    drop_leaks: bool = SweepConfig.drop_leaks,
    drop_label_issues: int | str | Path | None = SweepConfig.drop_label_issues,
    progress: bool = False,
) -> featcache.training.sweep.SweepResult:
    """Train every head of a grid for several seeds, rank the configurations, and keep the best head.

    Parameters
    ----------
    cache : str or Path
        The cache to sweep on.
    out : str or Path
        The folder of the sweep: runs/, sweep.csv, sweep.json, sweep.md, plots, best-head/.
    lr, inner, dropout : sequence
        The grid: Adam learning rates, units of one inner Dense relu layer (0 for none), dropout rates.
    seeds : int
        Seeds per configuration.
    epochs, batch_size, holdout_fraction, memory_budget, with_views, drop_leaks, drop_label_issues
        Each run's options, as for :func:`train_head`.
    jobs : int, optional
        Worker processes; None: one per core.
    baseline_c : sequence of float
        C values of a logistic-regression baseline to sweep too; empty: no baseline.
    heatmap : tuple of two str
        The two of ``lr``, ``inner`` and ``dropout`` the heatmap plots.
    progress : bool
        Show a progress bar.

    Returns
    -------
    SweepResult
        Every run, the ranking and the best head (:class:`featcache.training.sweep.SweepResult`).
    """
    config = SweepConfig(
        lr=lr,
        inner=inner,
        dropout=dropout,
        seeds=seeds,
        epochs=epochs,
        batch_size=batch_size,
        jobs=jobs,
        baseline_c=baseline_c,
        heatmap=heatmap,
        holdout_fraction=holdout_fraction,
        memory_budget=memory_budget,
        with_views=with_views,
        drop_leaks=drop_leaks,
        drop_label_issues=drop_label_issues,
    )
    return featcache.training.sweep.run_sweep(cache, out, config, progress=progress)


def leaks(
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_LEAKS_DIR,
    *,
    candidate_cosine: float = LeaksConfig.candidate_cosine,
    min_inliers: int = LeaksConfig.min_inliers,
    min_inlier_share: float = LeaksConfig.min_inlier_share,
    data_dir: str | Path | None = LeaksConfig.data_dir,
    progress: bool = False,
) -> featcache.training.leaks.LeaksResult:
    """Find the images that leak between the splits of a cache: exact and near duplicates.

    Parameters
    ----------
    cache : str or Path
        The cache whose splits are searched.
    out : str or Path
        The folder for leaks.json and leaks.csv.
    candidate_cosine : float
        Cosine above which a nearest neighbour in an earlier split is checked.
    min_inliers : int
        Least number of matched keypoints that one geometric transform carries onto each other in a near
        duplicate.
    min_inlier_share : float
        Least share of the keypoints (of the image that has more) that the transform carries onto their
        matches in a near duplicate.
    data_dir : str or Path, optional
        Where the images are; None: the folder the cache recorded.
    progress : bool
        Show a progress bar.

    Returns
    -------
    LeaksResult
        The exact and near duplicates found (:class:`featcache.training.leaks.LeaksResult`).
    """
    config = LeaksConfig(
        candidate_cosine=candidate_cosine,
        min_inliers=min_inliers,
        min_inlier_share=min_inlier_share,
        data_dir=data_dir,
    )
    result = featcache.training.leaks.find_leaks(cache, config, progress=progress)
    featcache.training.leaks.write_leaks(result, Path(out))
    return result


def labels(
    cache: str | Path = DEFAULT_CACHE,
    out: str | Path = DEFAULT_LABELS_DIR,
    *,
    split: str = LabelsConfig.split,
    folds: int = LabelsConfig.folds,
    baseline_c: float = LabelsConfig.baseline_c,
    seed: int = LabelsConfig.seed,
) -> featcache.training.labels.LabelsResult:
    """Rank the rows of a split by how likely their label is wrong, and write the ranking into ``out``.

    Parameters
    ----------
    cache : str or Path
        The cache whose labels are checked.
    out : str or Path
        The folder for labels.csv, labels.json and report.html.
    split : {"train", "validation", "test"}
        The split whose labels are checked.
    folds : int
        Folds of the out-of-fold probabilities (each row's from a model fitted on the other folds).
    baseline_c : float
        Inverse regularization strength of the standardized logistic regression.
    seed : int
        Seed of the folds.

    Returns
    -------
    LabelsResult
        Every row, likeliest label error first, with its given and suggested class and their out-of-fold
        probabilities (:class:`featcache.training.labels.LabelsResult`).
    """
    config = LabelsConfig(split=split, folds=folds, baseline_c=baseline_c, seed=seed)
    result = featcache.training.labels.rank_labels(cache, config)
    featcache.training.labels.write_labels(result, Path(out))
    return result


@renamed(**HEAD_FORMER_NAMES)
def compare(
    cache: str | Path | Sequence[str | Path] = DEFAULT_CACHE,
    out: str | Path = DEFAULT_COMPARE_DIR,
    *,
    lr: float = HeadConfig.lr,
    batch_size: int = HeadConfig.batch_size,
    epochs: int = HeadConfig.epochs,
    inner: Sequence[int] = HeadConfig.inner,
    dropout: float = HeadConfig.dropout,
    seed: int = HeadConfig.seed,
    early_stopping: int | None = HeadConfig.early_stopping,
    holdout_fraction: float = HeadConfig.holdout_fraction,
    memory_budget: int | str | None = HeadConfig.memory_budget,
    with_views: bool = HeadConfig.with_views,
    drop_leaks: bool = HeadConfig.drop_leaks,
    drop_label_issues: int | str | Path | None = HeadConfig.drop_label_issues,
    head: str | Path | None = None,
) -> featcache.training.comparison.CompareResult | featcache.training.backbone_comparison.CachesResult:
    """Compare the Keras head with a tuned logistic-regression baseline on the same splits of a cache.

    Above ``memory_budget`` the baseline is a streaming SGD logistic regression, and the report says so.

    Parameters
    ----------
    cache : str, Path or sequence of them
        The cache to compare on; given several (e.g. one per backbone), each is compared in a folder of its
        own and one table sets them side by side.
    out : str or Path
        The folder for the report, the figures and both models.
    lr, batch_size, epochs, inner, dropout, seed, early_stopping
        The head's options, as for :func:`train_head`.
    holdout_fraction, memory_budget, with_views, drop_leaks, drop_label_issues
        As for :func:`train_head`.
    head : str or Path, optional
        A head folder to compare instead of training one (one cache only).

    Returns
    -------
    CompareResult or CachesResult
        The scores of both models (:class:`featcache.training.comparison.CompareResult`), or of each cache
        (:class:`featcache.training.backbone_comparison.CachesResult`).
    """
    config = HeadConfig(
        lr=lr,
        batch_size=batch_size,
        epochs=epochs,
        inner=inner,
        dropout=dropout,
        seed=seed,
        early_stopping=early_stopping,
        holdout_fraction=holdout_fraction,
        memory_budget=memory_budget,
        with_views=with_views,
        drop_leaks=drop_leaks,
        drop_label_issues=drop_label_issues,
    )
    if isinstance(cache, (list, tuple)):
        if len(cache) > 1:
            if head is not None:
                raise ConfigError("--head compares one cache; leave it out to compare several caches")
            return featcache.training.backbone_comparison.compare_caches(cache, out, config)
        cache = cache[0] if cache else DEFAULT_CACHE
    return featcache.training.comparison.compare(cache, out, config, head=head)


def load(
    cache: str | Path = DEFAULT_CACHE,
    split: str | None = "train",
    *,
    memory_budget: int | str | None = HeadConfig.memory_budget,
) -> featcache.training.loading.CachedSplit:
    """The vectors, labels and paths of one split of a cache, in memory: for scikit-learn or one's own model.

    Parameters
    ----------
    cache : str or Path
        A cache written by :func:`extract`.
    split : {"train", "validation", "test"} or None
        The rows the cache stores as that split (none is carved from another); None: every row.
    memory_budget : int or str, optional
        Bytes the vectors may take (or a size such as ``"1GB"``); a larger split is refused, to be read in
        batches with :func:`dataset` instead. None: a quarter of the available memory.

    Returns
    -------
    CachedSplit
        ``X`` float32 ndarray of shape (n_rows, dim), ``y`` int64 ndarray of shape (n_rows,) indexing
        ``class_names``, ``paths`` each row's image path relative to the data folder, ``rows`` their indices
        in the cache (:class:`featcache.training.loading.CachedSplit`).
    """
    return featcache.training.loading.load_split(cache, split, memory_budget)


def dataset(
    cache: str | Path = DEFAULT_CACHE,
    split: str | None = "train",
    *,
    batch_size: int = HeadConfig.batch_size,
    shuffle: bool = True,
    seed: int = HeadConfig.seed,
) -> keras.utils.PyDataset:
    """One split of a cache as a Keras dataset, read a chunk of rows at a time: for ``model.fit``.

    Parameters
    ----------
    cache : str or Path
        A cache written by :func:`extract`.
    split : {"train", "validation", "test"} or None
        The rows the cache stores as that split; None: every row.
    batch_size : int
        Rows per batch.
    shuffle : bool
        Shuffle as :func:`train_head` does: each epoch a new seeded order of chunks of rows, the rows of a few
        chunks at a time shuffled together. False: cache order.
    seed : int
        Seed of the shuffle; the same seed gives the same batches.

    Returns
    -------
    keras.utils.PyDataset
        Batches ``(x, y)``: ``x`` float32 of shape (batch_size, dim), ``y`` float32 one-hot of shape
        (batch_size, n_classes); every row of the split once per epoch.
    """
    return featcache.training.loading.split_dataset(cache, split, batch_size, shuffle, seed)


def demo_data(cache_dir: str | Path | None = None) -> Path:
    """The folder of images ``make demo`` extracts: ``$FEATCACHE_DATA``, else clothing-dataset-small
    downloaded once into Keras' cache folder (or ``cache_dir``); see :func:`featcache.demo.data_dir`."""
    return featcache.demo.data_dir(cache_dir)
