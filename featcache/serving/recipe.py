"""Replaying what a cache recorded on new images: the recipe, the matching live backbone, image lists."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from featcache.config import WEIGHTS_ENV, env_weights
from featcache.errors import ConfigError, WeightsError
from featcache.images import ImageDecodeError, PreprocessSpec, is_image_name, load_image

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What turned file bytes into the cached vectors: preprocessing, weights, their identity, precision."""

    spec: PreprocessSpec
    weights: str
    weights_id: str
    class_names: tuple[str, ...] = ()
    precision: str = "float32"
    backbone: str = "xception"  # the registry name of the base (caches before the registry: xception)

    @classmethod
    def from_head(cls, meta: dict) -> Recipe:
        """The recipe a head was trained on, from its ``head.json``."""
        spec = meta["preprocessing"]
        spec = json.loads(spec) if isinstance(spec, str) else spec
        names = tuple(meta["class_names"])
        precision = meta.get("precision", "float32")
        base = _registered(meta.get("backbone"))
        return cls(PreprocessSpec.from_dict(spec), str(meta["weights"]), meta["weights_id"], names, precision, base)

    @classmethod
    def from_cache(cls, attrs: dict, class_names=()) -> Recipe:
        """The recipe of a cache, from its attributes."""
        spec = PreprocessSpec.from_dict(json.loads(attrs["preprocessing"]))
        precision = attrs.get("precision", "float32")
        base = _registered(attrs.get("backbone"))
        return cls(spec, str(attrs["weights"]), attrs["weights_id"], tuple(class_names), precision, base)


def _registered(name) -> str:
    """The registry name a cache or head recorded; unknown names are refused (never imported)."""
    from featcache.backbones.registry import REGISTRY

    if name in (None, ""):
        return "xception"
    if name not in REGISTRY:
        raise ConfigError(
            f"the cache was made with backbone {name!r}, which this featcache does not know; upgrade featcache"
        )
    return name


@dataclass(frozen=True)
class LiveBackbone:
    """The backbone to run now, the weights it was given, and whether they are the recorded ones."""

    backbone: object
    weights: str
    weights_id: str
    matches: bool


def live_backbone(recipe: Recipe, weights: str | None = None, backbone=None) -> LiveBackbone:
    """Choose the backbone that replays ``recipe``.

    ``backbone`` (any object with ``identity()`` and ``build()``) is used as given. Otherwise
    ``weights`` is used as given when set; when not, the first of ``$FEATCACHE_WEIGHTS`` and the
    recorded weights whose identity matches the recording, else the first that can be read.
    Callers decide what a mismatch means (predict refuses, verify reports).
    """
    if backbone is not None:
        found = backbone.identity()["weights_id"]
        return LiveBackbone(backbone, getattr(backbone, "weights", "given"), found, found == recipe.weights_id)
    candidates = [weights] if weights else [w for w in (env_weights(), recipe.weights) if w]
    readable = []
    for candidate in dict.fromkeys(candidates):
        chosen = _backbone(candidate, recipe)
        try:
            found = chosen.identity()["weights_id"]
        except WeightsError as exc:
            log.info("weights %s not usable: %s", candidate, exc)
            continue
        if found == recipe.weights_id:
            return LiveBackbone(chosen, candidate, found, True)
        readable.append(LiveBackbone(chosen, candidate, found, False))
    if readable:
        return readable[0]
    raise WeightsError(
        f"weights {' or '.join(map(str, candidates))} not found; pass --weights PATH to the weights the cache was "
        f"made with ({recipe.weights_id}), or set {WEIGHTS_ENV}"
    )


def _backbone(weights: str, recipe: Recipe):
    """The base as the recipe ran it: TensorFlow for float32, the extract's other runtime otherwise."""
    from featcache.backbones import backbone_for

    runtime = "tensorflow" if recipe.precision == "float32" else "openvino"
    return backbone_for(weights, recipe.spec.image_size, recipe.precision, runtime, recipe.backbone)


def require_match(live: LiveBackbone, recipe: Recipe, what: str) -> None:
    """Refuse to serve a head with other weights than its vectors were made with."""
    if not live.matches:
        raise WeightsError(
            f"weights {live.weights} ({live.weights_id}) are not the ones {what} was made with "
            f"({recipe.weights} = {recipe.weights_id}); its classes would be wrong — pass --weights with that file"
        )


def collect_images(paths) -> list[tuple[Path, str | None]]:
    """(path, None) for each image file named by ``paths``, in the order given (folders searched
    recursively and sorted, hidden entries skipped, repeats dropped), and (path, reason) for each
    path that does not exist.
    """
    entries: dict[Path, str | None] = {}
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if is_image_name(p) and p.is_file() and not _hidden(p, path))
            entries.update((p, None) for p in found if p not in entries)
        elif path.exists():
            entries.setdefault(path, None)
        else:
            entries.setdefault(path, "no such file or folder")
    if not entries:
        named = ", ".join(map(str, paths))
        raise ConfigError(f"no images found in {named}; featcache reads JPEG, PNG, BMP, GIF, WebP and TIFF files")
    return list(entries.items())


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def decode(path: Path, spec: PreprocessSpec):
    """Pixels uint8 (s, s, 3) of ``path`` as ``spec`` says, or the reason it cannot be read."""
    try:
        return load_image(path, spec)
    except ImageDecodeError as exc:
        return str(exc)
    except OSError as exc:  # a file that vanished or cannot be opened between listing and reading
        return f"cannot read file: {exc.strerror or exc}"
