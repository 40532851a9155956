"""Decoding one image file into the exact RGB pixels the backbone sees, and the spec that replays it."""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

#: File suffixes treated as images; anything else in a data folder is ignored.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IMAGE_SUFFIX_TUPLE = tuple(sorted(IMAGE_SUFFIXES))  # str.endswith takes a tuple

#: Interpolations offered by ``--interpolation``, mapped to Pillow's filters by name. The default,
#: nearest, is what Keras' ``load_img`` and ``ImageDataGenerator`` use, so the reference recipe's
#: pixels are reproduced exactly.
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box")

#: Images above this many pixels are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000

MIN_IMAGE_SIZE = 71  # Xception's smallest input


class ImageDecodeError(Exception):
    """A file could not be turned into pixels; ``str()`` is the reason recorded in the quarantine."""


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything that turns file bytes into the model's input, recorded in every cache.

    ``decoder`` is Pillow; the first frame of animated files is used; EXIF orientation is
    applied when ``exif_transpose`` (Keras' ``load_img`` ignores it; with False, 8-bit images
    decode to exactly its pixels at the same interpolation); every mode (grayscale, palette,
    RGBA, CMYK, 16-bit) is converted to 8-bit RGB (transparency composited on black, as
    Pillow's ``convert("RGB")`` does); the image is resized to ``image_size`` x ``image_size``
    (aspect ratio not kept, as Keras does) with ``interpolation``; then the model applies
    ``preprocess`` to the uint8 pixels.
    """

    image_size: int = 150
    interpolation: str = "nearest"
    decoder: str = "pillow"
    color: str = "RGB"
    exif_transpose: bool = True
    preprocess: str = "keras.applications.xception.preprocess_input"

    def to_dict(self) -> dict:
        # Every field, exif_transpose included: caches have recorded it since the first release, so
        # the fingerprint of a cache made at the defaults stays the same.
        return asdict(self)

    @classmethod
    def from_dict(cls, fields: dict) -> PreprocessSpec:
        known = {k: fields[k] for k in cls.__dataclass_fields__ if k in fields}
        return cls(**known)


def is_image_name(path: str | Path) -> bool:
    """True when the file name (a name, or a path's last part) looks like an image featcache reads;
    hidden files never do."""
    name = path if isinstance(path, str) else path.name
    return not name.startswith(".") and name.lower().endswith(IMAGE_SUFFIX_TUPLE)


def load_image(path: str | Path, spec: PreprocessSpec) -> np.ndarray:
    """Return the pixels of the file ``path`` as uint8 of shape (image_size, image_size, 3).

    Raises ImageDecodeError with a short reason for empty, truncated, oversized or
    undecodable files.
    """
    return decode_image(Path(path), spec)


def decode_image(source: bytes | Path, spec: PreprocessSpec) -> np.ndarray:
    """The pixels of an image given as its file's bytes (or its path), as :func:`load_image`."""
    from PIL import Image, UnidentifiedImageError

    try:
        if _is_empty(source):
            raise ImageDecodeError("empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as im:
                return _pixels(im, spec)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image: Pillow cannot identify the file format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except OSError as exc:
        raise ImageDecodeError(_os_reason(exc)) from None
    except (ValueError, SyntaxError, EOFError, MemoryError, IndexError) as exc:
        raise ImageDecodeError(f"undecodable image: {exc}") from None


def _is_empty(source: bytes | Path) -> bool:
    return len(source) == 0 if isinstance(source, bytes) else source.stat().st_size == 0


def _pixels(im, spec: PreprocessSpec) -> np.ndarray:
    """Decode the first frame, apply EXIF orientation (if asked), convert to RGB and resize, as ``spec`` says."""
    from PIL import Image, ImageOps

    _check_pixels(im.size)
    im.seek(0)
    im.load()
    if spec.exif_transpose:
        im = ImageOps.exif_transpose(im)
    rgb = _to_rgb(im)
    resample = getattr(Image.Resampling, spec.interpolation.upper())
    return np.asarray(rgb.resize((spec.image_size, spec.image_size), resample=resample), dtype=np.uint8)


def _check_pixels(size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(f"decompression bomb: {width}x{height} pixels exceeds the limit of {MAX_PIXELS}")
    if width < 1 or height < 1:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})")


def _to_rgb(im):
    """Convert any Pillow mode to 8-bit RGB; 16-bit and float modes are scaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        arr = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        from PIL import Image

        im = Image.fromarray(arr, mode="L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _os_reason(exc: OSError) -> str:
    text = str(exc)
    if "truncated" in text.lower():
        return f"truncated image: {text}"
    return f"unreadable image: {text}"
