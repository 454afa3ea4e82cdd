"""Display rules per kind of map, NaN maps, and the whole-image view (crop box, size cap)."""

import io
import json

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.cli import main
from explainer.errors import InputError
from explainer.explanation import Explanation
from explainer.imaging import display_copy
from explainer.visualization import DisplayOptions, blend, overlay_png, shown

from tiny import linear_classifier


def _e(m, method="occlusion", display="jet", **kw):
    return Explanation(map=np.asarray(m, np.float32), target=0, label="a", score=0.5, method=method,
                       params={"score": "probability"}, display=display, **kw)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_pixel_attributions_sign_and_percentile_clipping():
    a = np.zeros((1, 3, 10, 10), np.float32)
    a[0, 0] = np.arange(100).reshape(10, 10) - 50.0   # channel 0: -50..49
    a[0, 1, 0, 0] = 7.0
    e = _e(np.abs(a).sum(axis=(0, 1)), method="gradient", arrays={"attributions": a})
    s = shown(e, DisplayOptions(sign="positive", clip_percentile=100))
    pos = np.maximum(a[0], 0).sum(axis=0)
    np.testing.assert_allclose(s.values, pos)
    assert s.kind == "pixel" and s.vmin == 0 and s.vmax == pos.max() and "probability" in s.label
    neg = shown(e, DisplayOptions(sign="negative", clip_percentile=100)).values
    np.testing.assert_allclose(neg, np.maximum(-a[0], 0).sum(axis=0))
    signed = shown(e, DisplayOptions(sign="all", clip_percentile=100))
    assert signed.vmin == -signed.vmax and signed.values[0, 0] == -50 + 7
    s99 = shown(e, DisplayOptions(sign="absolute", clip_percentile=90))
    lim = np.percentile(np.abs(a).sum(axis=1)[0], 90)
    assert s99.vmax == pytest.approx(lim) and s99.values.max() == pytest.approx(lim)
    assert np.all(s99.alpha[s99.values >= lim] == s99.alpha.max())   # saturated pixels: full opacity
    assert s99.alpha.min() == 0   # the zero-gradient pixel shows the photo
    smooth = shown(e, DisplayOptions(sign="absolute", smooth=2.0, clip_percentile=100)).values
    assert smooth.std() < s99.values.std()


def test_signed_alpha_follows_magnitude_and_heat_alpha_is_constant():
    m = np.array([[-2.0, 0.0], [1.0, 2.0]])
    s = shown(_e(m, method="prediction-difference", display="diverging"))
    assert s.cmap == "bwr" and s.vmin == -2 and s.vmax == 2
    assert s.alpha[0, 1] == 0 and s.alpha[0, 0] == s.alpha[1, 1] == pytest.approx(2 * s.alpha[1, 0])
    assert "log2" in s.label
    h = shown(_e(m))
    assert h.cmap == "jet" and np.all(h.alpha == 0.5) and (h.vmin, h.vmax) == (-2, 2)
    with pytest.raises(InputError):
        shown(_e(m), DisplayOptions(sign="positive"))
    with pytest.raises(InputError):
        DisplayOptions(view="side")


def test_nan_pixels_are_hatched_and_recorded(tmp_path):
    m = np.ones((20, 20), np.float32)
    m[:, 15:] = np.nan
    pixels = np.full((20, 20, 3), 255, np.uint8)
    e = _e(m, pixels=pixels)
    s = shown(e)
    assert np.all(s.alpha[:, 15:] == 0) and np.all(np.isnan(s.values[:, 15:]))
    rgb = blend(pixels, s)
    assert len({tuple(v) for v in rgb[:, 15:].reshape(-1, 3)}) == 2   # white and hatch grey
    assert len({tuple(v) for v in rgb[:, :15].reshape(-1, 3)}) == 1
    files = e.save(tmp_path, "nan")
    rec = json.loads((tmp_path / "nan.occlusion.json").read_text())
    assert rec["map_nan_pixels"] == 100 and rec["map_max"] == 1.0
    assert _png((tmp_path / "nan.occlusion.png").read_bytes()).std() > 5 and len(files) == 3
    grad = _e(m, method="gradient", arrays={"attributions": np.nan_to_num(m)[None, None]})
    assert np.all(np.isnan(shown(grad, DisplayOptions(smooth=1.0)).values[:, 15:]))


@pytest.fixture
def crop_model(tmp_path):
    w = np.zeros((2, 3, 16, 16), np.float32)
    w[0, :, :, :8] = 1.0
    w[1, :, :, 8:] = 1.0
    pre = {"size": [16, 16], "resize": "crop", "crop_fraction": 0.5}
    return linear_classifier(tmp_path / "crop.onnx", w, softmax=True, preprocessing=pre)


def test_full_view_places_the_map_on_a_non_square_image(tmp_path, crop_model):
    pixels = np.zeros((40, 120, 3), np.uint8)
    pixels[:, :60] = 255
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    for view in ("full", "crop"):
        assert main(["explain", str(tmp_path / "wide.png"), "--method", "occlusion", "--model", str(crop_model),
                     "--out", str(tmp_path / view), "--view", view, "--quiet"]) == 0
    rec = json.loads((tmp_path / "full" / "wide.occlusion.json").read_text())
    assert rec["image_size"] == [40, 120] and rec["display_options"]["view"] == "full"
    # shorter side 40 -> 16 / 0.5 = 32 px: scale 0.8, 96 x 32, centre 16 x 16 from (40, 8)
    np.testing.assert_allclose(rec["crop_box"], [50, 10, 70, 30])
    assert rec["preprocessing"]["resize"] == "crop" and rec["preprocessing"]["crop_fraction"] == 0.5
    full = _png((tmp_path / "full" / "wide.occlusion.png").read_bytes())
    crop = _png((tmp_path / "crop" / "wide.occlusion.png").read_bytes())
    assert full.shape[1] > 1.6 * full.shape[0]   # the whole 3:1 picture is drawn
    assert crop.shape[1] < 1.6 * crop.shape[0]
    assert main(["explain", str(tmp_path / "wide.png"), "--method", "occlusion", "--model", str(crop_model),
                 "--out", str(tmp_path / "bad"), "--sign", "positive"]) == 2
    assert not (tmp_path / "bad").exists()


def test_huge_aspect_ratio_is_capped_for_drawing(tmp_path):
    w = np.ones((1, 3, 4, 4), np.float32)
    path = linear_classifier(tmp_path / "s.onnx", np.concatenate([w, -w]), preprocessing={"size": [4, 4]})
    model = explainer.load_model(path)
    strip = np.zeros((1, 10000, 3), np.uint8)
    assert display_copy(strip).shape == (1, 2048, 3) and display_copy(np.zeros((5, 9, 3), np.uint8)).shape == (5, 9, 3)
    e = explainer.occlusion_sensitivity(model, strip, mask_size=2, stride=2)
    assert e.original.shape == (1, 2048, 3) and e.image_size == [1, 10000]
    png = _png(overlay_png(e))
    assert png.shape[0] * png.shape[1] < 2_000_000
