"""Reading images and preprocessing them."""

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.imaging import Preprocessing, fit_pixels, preprocess


def test_read_modes(tmp_path):
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 0  # fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.all(explainer.read_image(tmp_path / "a.png") == 255)
    Image.fromarray(np.full((5, 6), 100, np.uint8), "L").save(tmp_path / "g.png")
    g = explainer.read_image(tmp_path / "g.png")
    assert g.shape == (5, 6, 3) and np.all(g == 100)
    Image.fromarray(np.full((5, 6), 65535, np.uint16)).save(tmp_path / "16.png")
    assert np.all(explainer.read_image(tmp_path / "16.png") == 255)
    Image.fromarray(np.full((5, 6, 3), 7, np.uint8)).convert("P").save(tmp_path / "p.png")
    assert explainer.read_image(tmp_path / "p.png").shape == (5, 6, 3)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((4, 8, 3), np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    img.save(tmp_path / "r.jpg", exif=exif)
    assert explainer.read_image(tmp_path / "r.jpg").shape == (8, 4, 3)


@pytest.mark.parametrize("content", [b"", b"not an image", b"\x89PNG\r\n\x1a\n truncated"])
def test_unreadable_images(tmp_path, content):
    p = tmp_path / "x.png"
    p.write_bytes(content)
    with pytest.raises(ValueError, match="not a readable image"):
        explainer.read_image(p)
    with pytest.raises(ValueError, match="no such image"):
        explainer.read_image(tmp_path / "missing.png")


def test_preprocess_arithmetic():
    spec = Preprocessing(size=(2, 2), scale=1 / 255, mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 1.0))
    pixels = np.full((2, 2, 3), 255, np.uint8)
    x = preprocess(pixels, spec)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(x[0, :, 0, 0], [1.0, 2.0, 0.5], rtol=1e-6)


def test_centre_crop():
    pixels = np.zeros((100, 300, 3), np.uint8)
    pixels[:, 100:200] = 255  # a white centre third
    spec = Preprocessing(size=(50, 50), resize="crop", crop_fraction=0.5)
    # shorter side 100 -> 100 (50 / 0.5), width 300; the centre 50x50 is all white
    assert np.all(fit_pixels(pixels, spec) == 255)
    assert fit_pixels(pixels, Preprocessing(size=(50, 50))).shape == (50, 50, 3)


@pytest.mark.parametrize("kw", [dict(size=(0, 3)), dict(layout="NCWH"), dict(std=(0, 1, 1)),
                                dict(mean=(1, 2)), dict(resize="fill"), dict(crop_fraction=1.5)])
def test_bad_preprocessing(kw):
    with pytest.raises(ValueError):
        Preprocessing(**{"size": (4, 4), **kw})
