"""images.py: every supported format decodes to the same RGB grid; bad files get a reason."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from featcache.images import ImageDecodeError, PreprocessSpec, decode_image, is_image_name, load_image

SPEC = PreprocessSpec(image_size=80)


def _rgb(size=(40, 30)):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(
    "fmt,suffix",
    [("JPEG", ".jpg"), ("PNG", ".png"), ("BMP", ".bmp"), ("GIF", ".gif"), ("WEBP", ".webp"), ("TIFF", ".tif")],
)
def test_formats_decode_to_uint8_rgb_of_the_requested_size(tmp_path, fmt, suffix):
    path = tmp_path / f"x{suffix}"
    _rgb().save(path, format=fmt)
    pixels = load_image(path, SPEC)
    assert pixels.shape == (80, 80, 3) and pixels.dtype == np.uint8
    assert np.array_equal(decode_image(path.read_bytes(), SPEC), pixels)  # the bytes in memory, as extract reads them


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_every_mode_is_converted_to_rgb(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    im = (
        _rgb().convert(mode)
        if mode != "I;16"
        else Image.fromarray((np.arange(1200).reshape(30, 40) * 50).astype(np.uint16))
    )
    im.save(path)
    pixels = load_image(path, SPEC)
    assert pixels.shape == (80, 80, 3)


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((10, 10), 65535 // 2, dtype=np.uint16)).save(path)
    assert abs(int(load_image(path, SPEC)[0, 0, 0]) - 127) <= 1


def test_resize_uses_the_recorded_interpolation(tmp_path):
    path = tmp_path / "x.png"
    _rgb().save(path)
    nearest = load_image(path, PreprocessSpec(image_size=80, interpolation="nearest"))
    bilinear = load_image(path, PreprocessSpec(image_size=80, interpolation="bilinear"))
    expected = np.asarray(_rgb().resize((80, 80), Image.Resampling.BILINEAR))
    assert np.array_equal(bilinear, expected)
    assert not np.array_equal(nearest, bilinear)


def test_animated_gif_uses_the_first_frame(tmp_path):
    path = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixels = load_image(path, SPEC)
    assert pixels[..., 0].mean() > 200 and pixels[..., 2].mean() < 50


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # white left half
    im.save(path, exif=exif, quality=95)
    pixels = load_image(path, PreprocessSpec(image_size=80))
    assert pixels[:30].mean() > 200 and pixels[50:].mean() < 60  # white now on top


def _exif_rotated(path, size=80):
    """A square JPEG stored with white on the left and tagged to be shown rotated 90 degrees clockwise."""
    exif = Image.Exif()
    exif[0x0112] = 6  # the tag phones write for portrait photos
    im = _rgb((size, size))
    im.paste((255, 255, 255), (0, 0, size // 4, size))
    im.save(path, exif=exif, quality=95)
    return path


def _keras_pixels(path, size=80):
    import keras

    array = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(size, size)))
    assert np.array_equal(array, array.astype(np.uint8))
    return array.astype(np.uint8)


def test_exif_rotated_file_is_rotated_by_default_and_not_by_keras_load_img(tmp_path):
    path = _exif_rotated(tmp_path / "portrait.jpg")
    ours, keras_pixels = load_image(path, SPEC), _keras_pixels(path)
    assert keras_pixels[:, :20].min() > 200  # Keras: as stored, white on the left
    assert ours[:20].min() > 200  # featcache: as shown, white on top
    assert np.array_equal(ours, np.rot90(keras_pixels, k=-1))


def test_without_exif_transpose_the_pixels_are_keras_load_img_pixels(tmp_path):
    path = _exif_rotated(tmp_path / "portrait.jpg")
    assert np.array_equal(load_image(path, PreprocessSpec(image_size=80, exif_transpose=False)), _keras_pixels(path))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "P+transparency", "RGBA", "CMYK", "1"])
def test_without_exif_transpose_every_8_bit_mode_decodes_as_keras_load_img(tmp_path, mode):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    extra = {"transparency": 0} if mode == "P+transparency" else {}
    _rgb((53, 37)).convert(mode.split("+")[0]).save(path, **extra)
    assert np.array_equal(load_image(path, PreprocessSpec(image_size=80, exif_transpose=False)), _keras_pixels(path))


def test_the_default_spec_records_what_caches_have_always_recorded():
    # The fingerprint hashes this dict: a change at the defaults would make every existing cache stale.
    assert PreprocessSpec().to_dict() == {
        "image_size": 150,
        "interpolation": "nearest",
        "decoder": "pillow",
        "color": "RGB",
        "exif_transpose": True,
        "preprocess": "keras.applications.xception.preprocess_input",
    }
    assert PreprocessSpec(exif_transpose=False).to_dict()["exif_transpose"] is False
    assert PreprocessSpec.from_dict(PreprocessSpec(exif_transpose=False).to_dict()).exif_transpose is False


@pytest.mark.parametrize(
    "content,reason",
    [
        (b"", "empty file"),
        (b"hello, I am text", "not an image"),
        (bytes(range(256)) * 8, "not an image"),
    ],
)
def test_bad_bytes_raise_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(path, SPEC)
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(content, SPEC)


def test_truncated_jpeg_is_reported_as_truncated(tmp_path):
    good = tmp_path / "good.jpg"
    _rgb((200, 200)).save(good, quality=95)
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ImageDecodeError, match="truncated"):
        load_image(bad, SPEC)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(path)
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(path, SPEC)


def test_image_names():
    from pathlib import Path

    assert is_image_name(Path("a/b.JPG")) and is_image_name(Path("x.webp"))
    assert not is_image_name(Path(".DS_Store")) and not is_image_name(Path("notes.txt"))
    assert not is_image_name(Path("._hidden.jpg"))
