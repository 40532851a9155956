"""Frozen, validated configuration of each stage; errors name the bad value and what is allowed."""

from __future__ import annotations

import functools
import inspect
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from featcache.backbones.registry import BACKBONE_NAMES as BACKBONES
from featcache.backbones.registry import REGISTRY
from featcache.errors import ConfigError
from featcache.images import INTERPOLATIONS, PreprocessSpec
from featcache.locations import data_location

DEFAULT_CACHE = Path("cache") / "features.h5"
DEFAULT_HEAD_DIR = Path("cache") / "head"
DEFAULT_COMPARE_DIR = Path("cache") / "compare"
DEFAULT_SWEEP_DIR = Path("cache") / "sweep"
DEFAULT_LEAKS_DIR = Path("cache") / "leaks"
DEFAULT_LABELS_DIR = Path("cache") / "labels"
SPLIT_NAMES = ("train", "validation", "test")
#: float32 runs TensorFlow (the exact default); bfloat16 runs OpenVINO with a bf16 inference hint.
PRECISIONS = ("float32", "bfloat16")
#: Who runs the backbone; the default is tensorflow for float32 and openvino for bfloat16.
RUNTIMES = ("tensorflow", "openvino")
WEIGHTS_ENV = "FEATCACHE_WEIGHTS"


#: Who runs stage one: this process (threads), or a Ray cluster (pip install 'featcache[ray]').
ENGINES = ("local", "ray")
#: the environment variable that names a running Ray cluster, as for every Ray program
RAY_ADDRESS_ENV = "RAY_ADDRESS"


def env_weights() -> str | None:
    """``$FEATCACHE_WEIGHTS``, or None when it is not set."""
    return os.environ.get(WEIGHTS_ENV) or None


def default_weights() -> str:
    """``$FEATCACHE_WEIGHTS`` when set, else ``imagenet`` (Keras cache or download)."""
    return env_weights() or "imagenet"


def renamed(**former: str):
    """Let a function or a class still take the former names of its keyword parameters (``old="new"``), for
    one release: each one used warns with a one-line DeprecationWarning and is handed on under its new name.
    """

    def decorate(target):
        function = target.__init__ if isinstance(target, type) else target
        parameters = list(inspect.signature(function).parameters)

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in former.items():
                if old in kwargs:
                    message = f"{target.__name__}'s {old}= is now {new}=; {old}= will be removed in the next release"
                    warnings.warn(message, DeprecationWarning, stacklevel=2)
                    if new in kwargs or new in parameters[: len(args)]:
                        raise ConfigError(f"{new} and {old} both given; pass {new} only ({old} is its former name)")
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)

        if isinstance(target, type):
            target.__init__ = wrapper
            return target
        return wrapper

    return decorate


@dataclass(frozen=True)
class ExtractConfig:
    """Options of ``featcache extract``; see the CLI help for each."""

    data_dir: Path | str  # a local folder, or an fsspec URL (s3://bucket/photos) held as a str
    output: Path = DEFAULT_CACHE
    manifest: Path | None = None
    image_size: int | None = None  # None: the backbone's default (Xception: the recipe's 150)
    interpolation: str = "nearest"
    exif_transpose: bool = True
    batch_size: int = 32
    weights: str | None = None  # None: $FEATCACHE_WEIGHTS when set, else imagenet
    backbone: str = "xception"
    precision: str = "float32"
    runtime: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    strict: bool = False
    overwrite: bool = False
    workers: int = 2
    commit_seconds: float = 10.0  # computed vectors held at most this long before they are committed as a shard
    allow_outside: bool = False
    assume_unchanged: bool = False  # files already in the cache are not stat-ed: only new paths are read
    engine: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None  # None: as many as the cluster's CPUs allow
    ray_cpus: float = 1.0
    ray_gpus: float = 0.0
    augment: int | None = None  # views per train image; None: as many as the cache has
    augment_policy: str | None = None  # a built-in policy or a JSON file; None: the cache's, else lesson
    augment_seed: int | None = None  # None: the cache's, else 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", data_location(self.data_dir))
        object.__setattr__(self, "output", Path(self.output))
        if self.weights is None:
            object.__setattr__(self, "weights", default_weights())
        if self.manifest is not None:
            object.__setattr__(self, "manifest", Path(self.manifest))
        _check_choice("backbone", self.backbone, BACKBONES)
        spec = REGISTRY[self.backbone]
        if self.image_size is None:
            object.__setattr__(self, "image_size", spec.default_size)
        check_int("image_size", self.image_size, spec.min_size, f"{spec.application} needs at least {spec.min_size} px")
        check_int("batch_size", self.batch_size, 1, "use a positive batch size such as 32")
        check_int("workers", self.workers, 1, "use at least 1 decoding thread")
        _check_choice("interpolation", self.interpolation, INTERPOLATIONS)
        _check_bool("exif_transpose", self.exif_transpose)
        _check_choice("precision", self.precision, PRECISIONS)
        _resolve_runtime(self)
        _check_engine(self)
        _check_augment(self)
        if isinstance(self.commit_seconds, bool) or not isinstance(self.commit_seconds, int | float):
            raise ConfigError(f"commit_seconds must be a number of seconds, got {self.commit_seconds!r}")
        if not 0.0 <= self.commit_seconds <= 3600.0:
            raise ConfigError(
                f"commit_seconds must be between 0 (commit every batch) and 3600, got {self.commit_seconds}"
            )
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value}")
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ConfigError(
                f"val_fraction + test_fraction must leave images for training, got "
                f"{self.val_fraction} + {self.test_fraction}"
            )

    @property
    def preprocess(self) -> PreprocessSpec:
        return PreprocessSpec(
            image_size=self.image_size,
            interpolation=self.interpolation,
            exif_transpose=self.exif_transpose,
            preprocess=REGISTRY[self.backbone].preprocess,
        )


def check_out_file(out: Path) -> None:
    """Refuse an output path whose nearest existing folder is not a writable folder, before any work."""
    for folder in Path(out).parents:
        if folder.exists():
            if not folder.is_dir() or not os.access(folder, os.W_OK):
                raise ConfigError(f"cannot write {out}: {folder} is not a writable folder; choose another --out")
            return


def check_out_folder(out: Path) -> None:
    """Refuse an output folder that exists as a file or cannot be created."""
    check_out_file(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; choose another --out")


def check_int(name: str, value: int, minimum: int, hint: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r} ({hint})")


def _check_bool(name: str, value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be True or False, got {value!r}")


def _resolve_runtime(config: ExtractConfig) -> None:
    """Set the runtime of the precision when none was given; refuse bfloat16 on TensorFlow."""
    if config.runtime is None:
        object.__setattr__(config, "runtime", "openvino" if config.precision == "bfloat16" else "tensorflow")
    _check_choice("runtime", config.runtime, RUNTIMES)
    if config.precision == "bfloat16" and config.runtime != "openvino":
        raise ConfigError("precision bfloat16 runs on the openvino runtime; pass --runtime openvino or leave it out")


def _check_augment(config: ExtractConfig) -> None:
    if config.augment is not None:
        check_int("augment", config.augment, 0, "use the number of augmented views per train image, 0 for none")
    if config.augment_seed is not None:
        check_int("augment_seed", config.augment_seed, 0, "use a non-negative integer seed")
    if config.augment_policy is not None:
        from featcache.augment import policy_for

        policy_for(config.augment_policy)  # a clear error now rather than after the clean vectors


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")


EXPORT_FORMATS = ("keras", "saved_model", "tflite", "onnx")
#: what ``--format tflite`` does to the weights: keep float32, int8 weights (dynamic range), or float16 weights
QUANTIZATIONS = ("none", "dynamic", "float16")
#: the file name each file format must end in
EXPORT_SUFFIXES = {"keras": ".keras", "tflite": ".tflite", "onnx": ".onnx"}


@dataclass(frozen=True)
class PredictConfig:
    """Options of ``featcache predict``; ``weights`` None means the head's own (or $FEATCACHE_WEIGHTS)."""

    images: tuple[Path, ...]
    head: Path
    top_k: int = 3
    batch_size: int = 32
    weights: str | None = None
    workers: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "images", tuple(Path(p) for p in self.images))
        object.__setattr__(self, "head", Path(self.head))
        if not self.images:
            raise ConfigError("no images given; pass image files or folders of images")
        check_int("top_k", self.top_k, 1, "ask for at least the best class")
        check_int("batch_size", self.batch_size, 1, "use a positive batch size such as 32")
        check_int("workers", self.workers, 1, "use at least 1 decoding thread")


@dataclass(frozen=True)
class ExportConfig:
    """Options of ``featcache export``."""

    head: Path
    out: Path
    format: str = "keras"
    quantize: str = "none"
    check_images: tuple[Path, ...] = ()  # empty: the validation split of the cache the head was trained on
    weights: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "head", Path(self.head))
        object.__setattr__(self, "out", Path(self.out))
        object.__setattr__(self, "check_images", tuple(Path(p) for p in self.check_images))
        _check_choice("format", self.format, EXPORT_FORMATS)
        _check_choice("quantize", self.quantize, QUANTIZATIONS)
        suffix = EXPORT_SUFFIXES.get(self.format)
        if suffix and self.out.suffix != suffix:
            raise ConfigError(
                f"out must end in {suffix} for --format {self.format}, got {self.out}; e.g. model{suffix}"
            )
        if self.quantize != "none" and self.format != "tflite":
            raise ConfigError(f"--quantize {self.quantize} is for --format tflite; leave it out for {self.format}")


@dataclass(frozen=True)
class VerifyConfig:
    """Options of ``featcache verify``; ``data_dir`` None means the folder recorded in the cache."""

    cache: Path = DEFAULT_CACHE
    sample: int = 32
    tolerance: float = 1e-4
    rel_tolerance: float = 1e-3
    seed: int = 0
    weights: str | None = None
    batch_size: int = 32
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache", Path(self.cache))
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))
        check_int("sample", self.sample, 1, "recompute at least one row, e.g. 32")
        check_int("batch_size", self.batch_size, 1, "use a positive batch size such as 32")
        check_int("seed", self.seed, 0, "use a non-negative seed")
        for name in ("tolerance", "rel_tolerance"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


#: the share of the memory available at start-up that stage two may fill with vectors by default
MEMORY_BUDGET_FRACTION = 0.25
#: the budget when the available memory cannot be read
FALLBACK_MEMORY_BUDGET = 2 * 10**9
SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
SIZE_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def available_memory() -> int | None:
    """Bytes of memory available to a new process (MemAvailable on Linux), or None when unknown."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_memory_budget() -> int:
    """A quarter of the memory available now (MEMORY_BUDGET_FRACTION), or 2 GB when that is unknown."""
    available = available_memory()
    return int(available * MEMORY_BUDGET_FRACTION) if available else FALLBACK_MEMORY_BUDGET


def memory_budget_bytes(value) -> int:
    """Bytes of the memory budget ``value`` (a size, see :func:`parse_size`), or the default budget when None."""
    return default_memory_budget() if value is None else parse_size("memory_budget", value)


def parse_size(name: str, value) -> int:
    """Bytes of a size given as a number of bytes or a string such as ``1GB``, ``500MB``, ``2GiB``."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", value) if isinstance(value, str) else None
    if match is None or match.group(2).lower() not in SIZE_UNITS:
        raise ConfigError(f"{name} must be a size such as 1GB, 500MB, 2GiB or a number of bytes, got {value!r}")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


def format_size(size: int) -> str:
    """``size`` bytes in GB, MB or kB (powers of 1000) with two decimals, as summaries print it."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.2f} {unit}"
    return f"{size} bytes"


#: the former names of HeadConfig's fields, still taken (with a DeprecationWarning) until the next release
HEAD_FORMER_NAMES = {"val_fraction": "holdout_fraction", "augmented": "with_views"}


@dataclass(frozen=True)
class RowOptions:
    """Which rows a head is trained and judged on, and how their vectors are read: the options
    :class:`HeadConfig` and :class:`SweepConfig` share (documented in :class:`HeadConfig`)."""

    holdout_fraction: float = 0.2
    memory_budget: int | str | None = None  # None: default_memory_budget()
    with_views: bool = False
    drop_leaks: bool = False
    drop_label_issues: int | Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "memory_budget", memory_budget_bytes(self.memory_budget))
        object.__setattr__(self, "drop_label_issues", label_issues_spec(self.drop_label_issues))
        _check_bool("with_views", self.with_views)
        _check_bool("drop_leaks", self.drop_leaks)
        check_fraction("holdout_fraction", self.holdout_fraction, 0.0, 1.0, False, "e.g. 0.2")


@renamed(**HEAD_FORMER_NAMES)
@dataclass(frozen=True)
class HeadConfig(RowOptions):
    """Options of ``featcache train-head`` (and of the head ``featcache compare`` trains).

    The defaults are the reference recipe: vectors -> Dense(n_classes) logits, Adam(lr=0.01),
    categorical cross-entropy on one-hot labels, batch 32, 10 epochs. ``inner`` adds Dense relu
    layers before the output, ``dropout`` follows each of them (or the input when there are none),
    ``early_stopping`` is a patience in epochs on validation accuracy, and ``holdout_fraction`` is
    the share of train rows held out for validation when the cache has no validation split.
    ``memory_budget`` is the bytes of vectors held in memory (an int, or a string such as ``1GB``;
    default a quarter of the available memory): above it the splits are read from the cache in
    chunks, with the same results. It changes how the head is trained, not the head, so ``to_dict`` leaves it out.
    ``with_views`` trains on the cache's augmented views: each epoch shows each train image as its
    clean vector or one of its K views, drawn uniformly (seeded). ``drop_leaks`` leaves out the
    validation and test rows that ``featcache leaks`` finds in an earlier split. ``drop_label_issues``
    leaves train rows out: the first N of ``featcache labels``' ranking of the train split (an int), or the
    paths listed in a CSV file with a ``path`` column (such as labels.csv, cut to the rows to drop).
    """

    lr: float = 0.01
    batch_size: int = 32
    epochs: int = 10
    inner: tuple[int, ...] = ()
    dropout: float = 0.0
    seed: int = 0
    early_stopping: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "inner", tuple(self.inner))
        check_int("epochs", self.epochs, 1, "train for at least one epoch, e.g. --epochs 10")
        check_int("batch_size", self.batch_size, 1, "use a positive batch size such as 32")
        check_int("seed", self.seed, 0, "use a non-negative integer seed")
        for units in self.inner:
            check_int("inner", units, 1, "give the units of each inner Dense layer, e.g. --inner 100")
        if self.early_stopping is not None:
            check_int("early_stopping", self.early_stopping, 1, "give a patience in epochs, e.g. 3")
        check_fraction("lr", self.lr, 0.0, 10.0, False, "the recipe uses 0.01")
        check_fraction("dropout", self.dropout, 0.0, 1.0, True, "e.g. 0.2")

    def to_dict(self) -> dict:
        """The options that make the head, as JSON values, as recorded in ``head.json``."""
        options = {**asdict(self), "inner": list(self.inner)}
        if isinstance(self.drop_label_issues, Path):
            options["drop_label_issues"] = str(self.drop_label_issues)
        del options["memory_budget"]
        return options


def label_issues_spec(value) -> int | Path | None:
    """``--drop-label-issues`` as an int N (a string of digits included) or the Path of a file of paths."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        if value is not None:
            check_int("drop_label_issues", value, 1, "give a number of rows such as 30, or a CSV file of paths")
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return label_issues_spec(int(value))
    if isinstance(value, (str, Path)) and str(value):
        return Path(value)
    raise ConfigError(f"drop_label_issues must be a number of rows or a CSV file of paths, got {value!r}")


def check_fraction(name: str, value, low: float, high: float, low_ok: bool, hint: str) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not (low <= value < high if low_ok else low < value < high):
        allowed = f"[{low:g}, {high:g})" if low_ok else f"({low:g}, {high:g})"
        raise ConfigError(f"{name} must be a number in {allowed}, got {value!r} ({hint})")


def _check_engine(config: ExtractConfig) -> None:
    _check_choice("engine", config.engine, ENGINES)
    if config.ray_actors is not None:
        check_int("ray_actors", config.ray_actors, 1, "use at least 1 actor, or leave it out for one per CPU")
    for name in ("ray_cpus", "ray_gpus"):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
    if config.ray_cpus == 0 and config.ray_gpus == 0:
        raise ConfigError("ray_cpus and ray_gpus are both 0; give each actor at least part of a CPU or a GPU")


@dataclass(frozen=True)
class LeaksConfig:
    """Options of ``featcache leaks``: the cosine that makes two images of different splits a candidate
    pair (among each image's nearest), the least number and share of matched keypoints that one geometric
    transform must carry onto each other to confirm it, and the data folder the images are read from
    (default: the one the cache recorded)."""

    candidate_cosine: float = 0.75
    min_inliers: int = 15
    min_inlier_share: float = 0.25
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        check_fraction("candidate_cosine", self.candidate_cosine, -1.0, 1.0, True, "e.g. 0.8")
        check_int("min_inliers", self.min_inliers, 1, "a number of keypoints, e.g. 15")
        check_fraction("min_inlier_share", self.min_inlier_share, 0.0, 1.0, True, "e.g. 0.25")
        if self.data_dir is not None:
            object.__setattr__(self, "data_dir", Path(self.data_dir))


@dataclass(frozen=True)
class LabelsConfig:
    """Options of ``featcache labels``: the split whose labels are checked, the folds of the out-of-fold
    probabilities, the logistic baseline's C and the seed of the folds."""

    split: str = "train"
    folds: int = 5
    baseline_c: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.split not in SPLIT_NAMES:
            raise ConfigError(f"split must be train, validation or test, got {self.split!r}")
        check_int("folds", self.folds, 2, "out-of-fold probabilities need 2 folds or more, e.g. 5")
        c = self.baseline_c
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
            raise ConfigError(f"baseline_c must be a positive number, got {c!r} (e.g. 0.001)")
        check_int("seed", self.seed, 0, "a non-negative integer seed")


SWEEP_AXES = ("lr", "inner", "dropout")


#: the former names of SweepConfig's fields, as for HEAD_FORMER_NAMES
SWEEP_FORMER_NAMES = {**HEAD_FORMER_NAMES, "cs": "baseline_c"}


@renamed(**SWEEP_FORMER_NAMES)
@dataclass(frozen=True)
class SweepConfig(RowOptions):
    """Options of ``featcache sweep``: the grid (``lr``, ``inner`` units of one inner Dense layer, 0 for
    none, ``dropout``), ``seeds`` seeds per configuration, the head's ``epochs``, ``batch_size``,
    ``holdout_fraction`` and ``memory_budget`` as in :class:`HeadConfig`, ``jobs`` worker processes,
    ``baseline_c`` the logistic baseline's C values (empty: no baseline), ``heatmap`` the two axes of the
    heatmap, ``with_views``, ``drop_leaks`` and ``drop_label_issues`` as ``HeadConfig`` takes them.
    The defaults are the grid the reference recipe's lesson explores next."""

    lr: tuple[float, ...] = (0.0001, 0.001, 0.01, 0.1)
    inner: tuple[int, ...] = (0, 10, 100, 1000)
    dropout: tuple[float, ...] = (0.0, 0.2, 0.5, 0.8)
    seeds: int = 3
    epochs: int = 10
    batch_size: int = 32
    jobs: int | None = None  # None: one per core
    baseline_c: tuple[float, ...] = ()
    heatmap: tuple[str, str] = ("lr", "inner")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("lr", "inner", "dropout", "baseline_c", "heatmap"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.jobs is None:
            object.__setattr__(self, "jobs", os.cpu_count() or 1)
        for name in ("lr", "inner", "dropout"):
            if not getattr(self, name):
                raise ConfigError(f"{name} needs at least one value, e.g. --{name} {getattr(SweepConfig, name)[0]}")
        for lr in self.lr:
            check_fraction("lr", lr, 0.0, 10.0, False, "e.g. 0.001,0.01")
        for units in self.inner:
            check_int("inner", units, 0, "0 means no inner layer, e.g. --inner 0,100")
        for rate in self.dropout:
            check_fraction("dropout", rate, 0.0, 1.0, True, "e.g. 0,0.2,0.5")
        for c in self.baseline_c:
            check_fraction("baseline_c", c, 0.0, 1e9, False, "e.g. --baseline-c 0.01,0.1,1")
        check_int("seeds", self.seeds, 1, "use at least one seed")
        check_int("epochs", self.epochs, 1, "train for at least one epoch")
        check_int("batch_size", self.batch_size, 1, "use a positive batch size such as 32")
        check_int("jobs", self.jobs, 1, "use at least one process")
        if len(self.heatmap) != 2 or not set(self.heatmap) <= set(SWEEP_AXES) or len(set(self.heatmap)) != 2:
            raise ConfigError(f"heatmap needs two of {', '.join(SWEEP_AXES)}, got {','.join(map(str, self.heatmap))}")
