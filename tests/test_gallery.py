"""The gallery generator: one command writes every figure, none blank, and the index links them."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from explainer.gallery import figures


def _not_blank(path) -> bool:
    pixels = np.asarray(Image.open(path).convert("RGB"))
    colours = np.unique(pixels.reshape(-1, 3), axis=0)
    drawn = (pixels.min(axis=2) < 200).mean()   # the share of the picture that is not background
    return bool(pixels.shape[0] >= 150 and pixels.shape[1] >= 300 and pixels.std() > 15
                and len(colours) > 100 and drawn > 0.02)


def test_not_blank_fails_on_blank_and_flat_pictures(tmp_path):
    Image.new("RGB", (600, 400), "white").save(tmp_path / "blank.png")
    flat = np.full((400, 600, 3), 255, np.uint8)
    flat[:20, :50] = 0   # a title and nothing else
    Image.fromarray(flat).save(tmp_path / "flat.png")
    assert not _not_blank(tmp_path / "blank.png") and not _not_blank(tmp_path / "flat.png")


@pytest.mark.slow
def test_gallery_writes_every_figure(tmp_path):
    names = [f.name for f in figures()]
    # every figure the issue lists, including prediction difference and the shortcut story
    for required in ("explore-top3", "explore-activations-early", "explore-activations-deep", "explore-grad-cam",
                     "explore-occlusion", "explore-lime", "explore-gradient", "explore-guided-backprop",
                     "explore-deep-dream", "explore-tsne", "explore-max-min", "attribution-methods",
                     "prediction-difference-sampling", "prediction-difference-hidden-unit",
                     "shortcut-explanations", "shortcut-corner-cropped"):
        assert required in names
    done = subprocess.run([sys.executable, "-m", "explainer.gallery", str(tmp_path), "--small"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([f"{n}.png" for n in names] + ["index.md"])
    for n in names:
        assert _not_blank(tmp_path / f"{n}.png"), n
    index = (tmp_path / "index.md").read_text()
    assert all(f"]({n}.png)" in index for n in names) and "small settings" in index
