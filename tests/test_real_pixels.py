"""The pixels featcache feeds the model are Keras' load_img pixels, on real clothing photos (../shared)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featcache.images import PreprocessSpec, decode_image
from tests.support import REAL_DATA, require_real

pytestmark = pytest.mark.real

EXIF_ORIENTATION = 0x0112


def _keras_pixels(path, size: int = 150) -> np.ndarray:
    """keras.utils.load_img + img_to_array, the reference recipe's loader, as uint8."""
    import keras

    array = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(size, size)))
    assert np.array_equal(array, array.astype(np.uint8)), path
    return array.astype(np.uint8)


@pytest.fixture(scope="module")
def real_photos():
    """Three photos of every class of the train split, none of them tagged with an EXIF rotation."""
    require_real()
    photos = [p for folder in sorted((REAL_DATA / "train").iterdir()) for p in sorted(folder.iterdir())[:3]]
    for path in photos:
        with Image.open(path) as im:
            assert im.getexif().get(EXIF_ORIENTATION, 1) == 1, f"{path} has an EXIF rotation"
    assert len(photos) == 30
    return photos


def test_default_pixels_equal_keras_load_img_on_real_photos(real_photos):
    for path in real_photos:
        assert np.array_equal(decode_image(path.read_bytes(), PreprocessSpec()), _keras_pixels(path)), path


def test_no_exif_transpose_equals_keras_load_img_on_a_real_photo_tagged_as_rotated(real_photos, tmp_path):
    path = tmp_path / "portrait.jpg"
    with Image.open(real_photos[0]) as im:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # shown rotated 90 degrees clockwise
        im.convert("RGB").resize((150, 150)).save(path, exif=exif, quality=95)
    keras_pixels = _keras_pixels(path)
    assert np.array_equal(decode_image(path, PreprocessSpec(exif_transpose=False)), keras_pixels)
    transposed = decode_image(path, PreprocessSpec())
    assert np.array_equal(transposed, np.rot90(keras_pixels, k=-1)) and not np.array_equal(transposed, keras_pixels)
