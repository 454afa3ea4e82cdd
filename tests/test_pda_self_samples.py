"""Issue 20 (3): prediction difference never samples windows from the image it explains (found by
content in the --data folder), and refuses a folder too small to sample from, with the number."""

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.errors import InputError
from explainer.methods.prediction_difference import prediction_difference
from tiny import linear_classifier


def _setup(tmp_path, rng):
    w = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, preprocessing={"size": [6, 6]}))
    data = tmp_path / "data"
    data.mkdir()
    pixels = rng.integers(0, 256, size=(6, 6, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(data / "explained.png")
    for v in (0, 255):
        Image.fromarray(np.full((6, 6, 3), v, np.uint8)).save(data / f"flat{v}.png")
    return w[0].astype(np.float64), model, data, pixels


@pytest.mark.parametrize("given", ["file", "pixels"])
def test_the_explained_image_is_left_out_of_the_samples(tmp_path, rng, given):
    w, model, data, pixels = _setup(tmp_path, rng)
    image = data / "explained.png" if given == "file" else pixels
    # logit score: evidence = logit(x) - mean_j logit(x with the window := image j). With the image
    # itself left out, S = 2 takes both flat images (0 and 1 after /255) at every window, so the
    # evidence of window W is exactly sum_W w * (x - 0.5); sampling x itself would shrink it.
    e = prediction_difference(model, image, 0, window_size=2, stride=2, num_samples=2, data=data, score="logit")
    x = pixels.transpose(2, 0, 1).astype(np.float64) / 255
    want = [(w * (x - 0.5))[:, y:y + 2, c:c + 2].sum() for y, c in e.arrays["window_corners"]]
    np.testing.assert_allclose(e.arrays["window_evidence"], want, rtol=1e-4, atol=1e-5)
    assert e.params["data_images"] == 2 and e.params["data_images_excluded"] == 1


def test_a_folder_too_small_is_refused_with_the_number(tmp_path, rng):
    _, model, data, _ = _setup(tmp_path, rng)
    with pytest.raises(InputError, match=r"2 image\(s\) besides the image being explained.*at least 3"):
        prediction_difference(model, data / "explained.png", 0, window_size=2, num_samples=3, data=data)
    (data / "flat0.png").unlink()
    (data / "flat255.png").unlink()
    with pytest.raises(InputError, match="no image besides the image being explained"):
        prediction_difference(model, data / "explained.png", 0, window_size=2, num_samples=1, data=data,
                              sampling="conditional", patch_size=3, cache_dir=tmp_path / "cache")
