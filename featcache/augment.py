"""Augmented views of an image: recorded policies of random transforms, and view j of an image as a pure function.

A policy is the geometric part of Keras' ``ImageDataGenerator``: its parameters keep that class's
names and meaning (``rotation_range`` in degrees, shifts as fractions of the side, ``shear_range``
in degrees, ``zoom_range``, flips, ``fill_mode``, ``cval``). View ``j`` of an image draws its
transform from a generator seeded by (policy, seed, content hash, j), so every run and every
machine produces the same pixels, and view j never depends on how many views are asked for. The
transform itself is Keras' ``apply_affine_transform`` (scipy, bilinear, on the float pixels the
decoder gives at the model's input size) followed by the flips, as ``ImageDataGenerator
.apply_transform`` does: the ``lesson`` policy's views are what ``ImageDataGenerator(shear_range=10,
zoom_range=0.1, vertical_flip=True)`` makes of the same parameters.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from featcache.errors import ConfigError
from featcache.hashing import json_sha256

FILL_MODES = ("nearest", "constant", "reflect", "wrap")


@dataclass(frozen=True)
class AugmentPolicy:
    """Ranges of the random transforms a view is drawn from (``ImageDataGenerator``'s names and meaning)."""

    name: str = "custom"
    rotation_range: float = 0.0
    width_shift_range: float = 0.0
    height_shift_range: float = 0.0
    shear_range: float = 0.0
    zoom_range: tuple[float, float] = (1.0, 1.0)
    horizontal_flip: bool = False
    vertical_flip: bool = False
    fill_mode: str = "nearest"
    cval: float = 0.0

    def to_dict(self) -> dict:
        found = asdict(self)
        found["zoom_range"] = list(self.zoom_range)
        return found

    @property
    def identity(self) -> dict:
        """What changes the views' pixels: every parameter but the name."""
        return {k: v for k, v in self.to_dict().items() if k != "name"}

    @classmethod
    def from_dict(cls, found: dict, name: str = "custom") -> AugmentPolicy:
        """A policy from ``ImageDataGenerator``-style keys; ConfigError naming what is wrong."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(found) - known)
        if unknown:
            raise ConfigError(
                f"augmentation policy {name}: unknown key(s) {', '.join(unknown)}; "
                f"known keys are {', '.join(sorted(known - {'name'}))}"
            )
        values = {"name": name, **found}
        if "zoom_range" in values:
            values["zoom_range"] = _zoom_range(values["zoom_range"], name)
        try:
            policy = cls(**values)
            for key in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "cval"):
                object.__setattr__(policy, key, float(getattr(policy, key)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"augmentation policy {name}: {exc}; use numbers for ranges") from None
        _check(policy)
        return policy


def _zoom_range(value, name: str) -> tuple[float, float]:
    """``ImageDataGenerator``'s zoom_range: a float z means [1 - z, 1 + z]."""
    if isinstance(value, (int, float)):
        return (1.0 - float(value), 1.0 + float(value))
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    raise ConfigError(f"augmentation policy {name}: zoom_range must be a number or [low, high]")


def _check(policy: AugmentPolicy) -> None:
    bad = [
        k
        for k in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range")
        if getattr(policy, k) < 0
    ]
    if bad:
        raise ConfigError(f"augmentation policy {policy.name}: {', '.join(bad)} must not be negative")
    if not 0 < policy.zoom_range[0] <= policy.zoom_range[1]:
        raise ConfigError(f"augmentation policy {policy.name}: zoom_range must be 0 < low <= high")
    if policy.fill_mode not in FILL_MODES:
        raise ConfigError(f"augmentation policy {policy.name}: fill_mode must be one of {', '.join(FILL_MODES)}")


#: the built-in policies; ``lesson`` is what the reference recipe adds next with ImageDataGenerator
POLICIES = {
    "lesson": AugmentPolicy("lesson", shear_range=10.0, zoom_range=(0.9, 1.1), vertical_flip=True),
    "flip": AugmentPolicy("flip", horizontal_flip=True),
    "light": AugmentPolicy("light", rotation_range=10.0, zoom_range=(0.95, 1.05), horizontal_flip=True),
}


def policy_for(name_or_file: str) -> AugmentPolicy:
    """A built-in policy by name, or one read from a JSON file of ``ImageDataGenerator``-style keys."""
    if name_or_file in POLICIES:
        return POLICIES[name_or_file]
    path = Path(name_or_file)
    if path.suffix.lower() != ".json":
        raise ConfigError(
            f"unknown augmentation policy {name_or_file!r}; use one of {', '.join(POLICIES)} or a .json file"
        )
    try:
        found = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read augmentation policy {path} ({exc.strerror}); check the path") from None
    except ValueError as exc:
        raise ConfigError(f"augmentation policy {path} is not valid JSON ({exc}); fix the file") from None
    if not isinstance(found, dict):
        raise ConfigError(f"augmentation policy {path} must be a JSON object of transform parameters")
    found.pop("name", None)
    return AugmentPolicy.from_dict(found, name=path.stem)


def view_parameters(policy: AugmentPolicy, seed: int, sha256: str, view: int, shape: tuple[int, int]) -> dict:
    """The transform of view ``view`` of the image of content ``sha256``: ``ImageDataGenerator``'s
    transform parameters, drawn in its order from a generator seeded by (policy, seed, sha256, view)."""
    key = json_sha256({"policy": policy.identity, "seed": int(seed), "sha256": sha256, "view": int(view)})
    rng = np.random.default_rng(int(key[:32], 16))
    rows, cols = shape
    p = policy
    theta = rng.uniform(-p.rotation_range, p.rotation_range) if p.rotation_range else 0.0
    tx = _shift(rng, p.height_shift_range, rows)
    ty = _shift(rng, p.width_shift_range, cols)
    shear = rng.uniform(-p.shear_range, p.shear_range) if p.shear_range else 0.0
    zx, zy = (1.0, 1.0) if p.zoom_range == (1.0, 1.0) else rng.uniform(p.zoom_range[0], p.zoom_range[1], 2)
    return {
        "theta": float(theta),
        "tx": float(tx),
        "ty": float(ty),
        "shear": float(shear),
        "zx": float(zx),
        "zy": float(zy),
        "flip_horizontal": bool(p.horizontal_flip and rng.random() < 0.5),
        "flip_vertical": bool(p.vertical_flip and rng.random() < 0.5),
    }


def _shift(rng, shift_range: float, side: int) -> float:
    """A shift in pixels: ranges below 1 are fractions of the side (as Keras takes them), others pixels."""
    if not shift_range:
        return 0.0
    return rng.uniform(-shift_range, shift_range) * (side if shift_range < 1 else 1)


def apply_view(pixels: np.ndarray, params: dict, policy: AugmentPolicy) -> np.ndarray:
    """``pixels`` (h, w, 3) transformed by ``params``: float32 (h, w, 3), as ``ImageDataGenerator
    .apply_transform`` computes it (affine transform with bilinear interpolation, then the flips)."""
    x = np.asarray(pixels, dtype=np.float32)
    matrix = _affine_matrix(params, x.shape[0], x.shape[1])
    if matrix is not None:
        from scipy import ndimage

        channels = [
            ndimage.affine_transform(
                x[..., c], matrix[:2, :2], matrix[:2, 2], order=1, mode=policy.fill_mode, cval=policy.cval
            )
            for c in range(x.shape[2])
        ]
        x = np.stack(channels, axis=-1)
    if params.get("flip_horizontal"):
        x = x[:, ::-1]
    if params.get("flip_vertical"):
        x = x[::-1]
    return np.ascontiguousarray(x, dtype=np.float32)


def _affine_matrix(params: dict, rows: int, cols: int) -> np.ndarray | None:
    """Keras' rotation · shift · shear · zoom matrix about the image centre, in (row, col) order; None if identity."""
    parts = []
    if params.get("theta", 0):
        t = np.deg2rad(params["theta"])
        parts.append(np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]))
    if params.get("tx", 0) or params.get("ty", 0):
        parts.append(np.array([[1, 0, params.get("tx", 0)], [0, 1, params.get("ty", 0)], [0, 0, 1]]))
    if params.get("shear", 0):
        s = np.deg2rad(params["shear"])
        parts.append(np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]]))
    if params.get("zx", 1) != 1 or params.get("zy", 1) != 1:
        parts.append(np.array([[params.get("zx", 1), 0, 0], [0, params.get("zy", 1), 0], [0, 0, 1]]))
    if not parts:
        return None
    matrix = parts[0]
    for part in parts[1:]:
        matrix = matrix @ part
    o_x, o_y = rows / 2 - 0.5, cols / 2 - 0.5
    centred = (
        np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]]) @ matrix @ np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    )
    centred[:, [0, 1]] = centred[:, [1, 0]]  # Keras' matrices are in (x, y) order; arrays are (row, col)
    centred[[0, 1]] = centred[[1, 0]]
    return centred


def views_identity(policy: AugmentPolicy, seed: int, fingerprint: str) -> dict:
    """What the views' vectors depend on: the clean vectors' fingerprint, the policy and the seed."""
    return {"views_version": 1, "cache_fingerprint": fingerprint, "policy": policy.identity, "seed": int(seed)}
