"""Folder listing, t-SNE over a folder, and maximal/minimal activating images with known scores."""

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer import dataset
from explainer.errors import InputError
from tiny import linear_classifier

SHORTCUT = Path(__file__).resolve().parent.parent / "models" / "shortcut"


def _small_folder(tmp_path, per_class=5):
    root = tmp_path / "imgs"
    for cls in ("circle", "square"):
        (root / cls).mkdir(parents=True)
        for p in sorted((SHORTCUT / "testset" / cls).glob("*.png"))[8:8 + per_class]:
            shutil.copy(p, root / cls / p.name)
    return root


def test_list_images(tmp_path):
    root = _small_folder(tmp_path, 2)
    Image.new("RGB", (4, 4)).save(root / "loose.png")
    (root / "notes.txt").write_text("x")
    f = dataset.list_images(root)
    assert [p.name for p in f.paths][0] == "circle_08.png" and len(f.paths) == 5
    assert f.truth == ["circle", "circle", None, "square", "square"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no images"):
        dataset.list_images(empty)


@pytest.mark.parametrize("color_by", ["predicted", "true"])
def test_tsne_folder_writes_every_image(tmp_path, color_by):
    model = explainer.load_model(SHORTCUT / "model.onnx")
    root = _small_folder(tmp_path)
    files = dataset.tsne_folder(model, root, tmp_path / "out", layer="/features/features.5/Relu",
                                color_by=color_by)
    rows = list(csv.DictReader(open(files["csv"])))
    assert sorted(Path(r["image"]).name for r in rows) == sorted(p.name for p in root.rglob("*.png"))
    assert all(np.isfinite([float(r["x"]), float(r["y"])]).all() for r in rows)
    assert {r["true"] for r in rows} == {"circle", "square"}
    assert Image.open(files["png"]).size[0] > 100
    again = dataset.tsne_folder(model, root, tmp_path / "out2", layer="/features/features.5/Relu",
                                color_by=color_by)
    assert open(again["csv"]).read() == open(files["csv"]).read()


def test_tsne_perplexity_checks():
    f = np.random.default_rng(0).normal(size=(6, 3))
    coords, p = dataset.tsne(f)
    assert coords.shape == (6, 2) and p == pytest.approx(5 / 3)
    with pytest.raises(InputError, match="perplexity"):
        dataset.tsne(f, perplexity=6)
    with pytest.raises(InputError, match="at least 4"):
        dataset.tsne(f[:3])


def test_max_min_activating_images_known_scores(tmp_path):
    # p(class 0) = sigmoid(sum of pixels / 255): brighter grey images score higher.
    w = np.zeros((2, 3, 4, 4), np.float32)
    w[0] = 1.0
    model = explainer.load_model(linear_classifier(tmp_path / "m.onnx", w, preprocessing={"size": [4, 4]}))
    greys = [90, 10, 200, 50, 130, 0]
    root = tmp_path / "g"
    root.mkdir()
    for i, g in enumerate(greys):
        Image.new("RGB", (4, 4), (g, g, g)).save(root / f"{i}.png")
    listing = dataset.list_images(root)
    x, pixels = dataset.load_folder(model, listing.paths)
    probs = dataset.predict_all(model, x, mini_batch_size=4)
    high, low = dataset.extremes(probs[:, 0], 3)
    assert [greys[int(listing.paths[i].stem)] for i in high] == [200, 130, 90]
    assert [greys[int(listing.paths[i].stem)] for i in low] == [0, 10, 50]
    png = dataset.grid_png([[pixels[i] for i in high], [pixels[i] for i in low]], ["max", "min"],
                           [["a"] * 3, ["b"] * 3])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    means = dataset.channel_means(np.arange(24, dtype=float).reshape(2, 3, 2, 2))
    np.testing.assert_allclose(means, [[1.5, 5.5, 9.5], [13.5, 17.5, 21.5]])
