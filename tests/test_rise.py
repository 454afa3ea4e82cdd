"""RISE on tiny linear models: masks against the reference algorithm, maps in closed form."""

import json
from pathlib import Path

import numpy as np
import pytest
from skimage.transform import resize

import explainer
from explainer.cli import main
from explainer.methods.rise import rise, rise_masks, rise_plan
from tiny import linear_classifier

COFFEE = str(Path(__file__).resolve().parent.parent / "models" / "efficientnet_lite0" / "examples" / "coffee.png")


def _model(tmp_path, weights, **kw):
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", weights, **kw))


def reference_masks(shape, n, s, p, seed):
    """The RISE reference code's masks, one at a time: skimage bilinear resize of each grid
    to (s + 1) * cell with mode="reflect", then the crop at the shift (same grids and shifts)."""
    plan = rise_plan(shape, n, s, p, seed)
    up = plan.upsampled
    out = np.empty((n, *shape))
    for i in range(n):
        big = resize(plan.grids[i].astype(np.float64), up, order=1, mode="reflect", anti_aliasing=False)
        dy, dx = plan.shifts[i]
        out[i] = big[dy:dy + shape[0], dx:dx + shape[1]]
    return out


@pytest.mark.parametrize("shape, s", [((30, 22), 4), ((32, 32), 7), ((10, 10), 1), ((9, 13), 9)])
def test_masks_match_reference_algorithm(shape, s):
    ours = rise_masks(shape, 20, s, 0.5, seed=2)
    assert ours.shape == (20, *shape) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference_masks(shape, 20, s, 0.5, 2), atol=1e-6)
    assert ours.min() >= -1e-7 and ours.max() <= 1 + 1e-6


@pytest.mark.parametrize("score", ["logit", "probability"])
@pytest.mark.parametrize("mask_value", ["auto", 0.0])
def test_map_is_scores_times_masks(tmp_path, rng, score, mask_value):
    # masked_i = fill + M_i * (x - fill); saliency = sum_i f(masked_i) M_i / (N p), computed here
    # with the reference masks and the model evaluated in float64 by einsum.
    w = rng.normal(size=(3, 3, 12, 10)).astype(np.float32) * 0.2
    x = rng.normal(size=(1, 3, 12, 10)).astype(np.float32)
    n, s, p = 50, 3, 0.4
    e = rise(_model(tmp_path, w), x, 1, num_masks=n, grid_size=s, keep_probability=p, seed=7,
             mask_value=mask_value, score=score, mini_batch_size=16)
    m = reference_masks((12, 10), n, s, p, 7)
    fill = x.mean(axis=(2, 3), keepdims=True) if mask_value == "auto" else np.zeros((1, 3, 1, 1))
    masked = fill + m[:, None] * (x - fill)
    z = np.einsum("kchw,nchw->nk", w.astype(np.float64), masked)
    f = z if score == "logit" else np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    expected = np.einsum("n,nhw->hw", f[:, 1], m) / (n * p)
    np.testing.assert_allclose(e.map, expected, rtol=1e-4, atol=1e-5)
    assert e.timings["forward_passes"] == n + 1 and e.params["cell"] == [4, 4]


def test_expectation_on_a_linear_model(tmp_path, rng):
    # logit = sum_v a(v) M(v) + c with a = sum_c w_c (x_c - fill_c), c = w . fill. For a pixel u
    # whose mask value is independent of every M(v) with a(v) != 0 (no shared grid cell):
    # E[f M(u)] / p = E[f] = c + p * sum_v a(v). Here 32x32, s = 4, cell 8, grids resized to 40:
    # the model sees rows/cols 0..7, which with shifts < 8 touch grid rows/cols {0, 1}; pixels
    # with y >= 26 or x >= 26 touch rows/cols {2, 3} only.
    x = rng.normal(size=(1, 3, 32, 32)).astype(np.float32)
    fill = x.mean(axis=(2, 3), keepdims=True)
    w = np.zeros((2, 3, 32, 32), np.float32)
    # weights with the sign of (x - fill), so a(v) > 0 on the region
    w[0, :, :8, :8] = 0.1 * np.sign(x - fill)[0, :, :8, :8] * rng.uniform(0.5, 1.5, size=(3, 8, 8))
    p = 0.5
    e = rise(_model(tmp_path, w), x, 0, num_masks=3000, grid_size=4, keep_probability=p,
             score="logit", seed=1)
    a = (w[0] * (x[0] - fill[0])).sum(axis=0, dtype=np.float64)
    c = float((w[0] * fill[0]).sum(dtype=np.float64))
    far = np.zeros((32, 32), bool)
    far[26:, :] = far[:, 26:] = True
    expected_far = c + p * a.sum()
    spread = np.abs(a).sum()  # scale of the score's variation
    assert abs(e.map[far].mean() - expected_far) < 0.03 * spread
    assert np.abs(e.map[far] - expected_far).max() < 0.1 * spread
    # In the region: E[map(u)] - E[f] = sum_v a(v) Cov(M(u), M(v)) / p, every term >= 0 (bilinear
    # weights are >= 0), and the v = u term alone is a(u) Var(M(u)) / p >= a(u) (1 - p) / 4
    # (the squared bilinear weights of a pixel sum to >= 1/4).
    excess = e.map[:8, :8] - expected_far
    assert excess.mean() > (1 - p) / 4 * a[:8, :8].mean()


def test_keep_probability_one_gives_the_score_everywhere(tmp_path, rng):
    w = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    e = rise(_model(tmp_path, w), x, 0, num_masks=10, grid_size=2, keep_probability=1.0, score="logit")
    np.testing.assert_allclose(e.map, e.score, rtol=1e-5)


def test_seed_reproduces_and_batch_size_does_not_matter(tmp_path, rng):
    w = rng.normal(size=(3, 3, 16, 16)).astype(np.float32) * 0.1
    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    model = _model(tmp_path, w)
    run = lambda **kw: rise(model, x, 2, num_masks=300, grid_size=5, **kw).map
    base = run(seed=4)
    np.testing.assert_array_equal(base, run(seed=4))
    assert np.abs(base - run(seed=5)).max() > 1e-3
    for b in (1, 3, 7, 10_000):
        np.testing.assert_allclose(run(seed=4, mini_batch_size=b), base, rtol=1e-6, atol=1e-7)


def test_cli_end_to_end(tmp_path, capsys):
    code = main(["explain", COFFEE, "--method", "rise", "--out", str(tmp_path), "--num-masks", "64",
                 "--grid-size", "5", "--keep-probability", "0.3", "--mask-value", "0", "--seed", "2",
                 "--quiet", "--json"])
    assert code == 0
    rec = json.loads(capsys.readouterr().out)[0]
    assert rec["target"] == 967 and rec["seed"] == 2 and rec["params"]["cell"] == [45, 45]
    assert rec["timings"]["forward_passes"] == 65 and rec["params"]["mask_value"] == [0.0, 0.0, 0.0]
    m = np.load(tmp_path / "coffee.rise.npy")
    assert m.shape == (224, 224) and np.isfinite(m).all()
    assert main(["explain", COFFEE, "--method", "rise", "--out", str(tmp_path), "--surrogate", "tree"]) == 2
    assert main(["explain", COFFEE, "--method", "rise", "--out", str(tmp_path), "--grid-size", "0"]) == 2
    assert "grid_size" in capsys.readouterr().err


@pytest.mark.parametrize("opts, message", [
    (dict(num_masks=0), "num_masks"),
    (dict(num_masks=2.0), "num_masks"),
    (dict(grid_size=0), "grid_size"),
    (dict(grid_size=9), "larger than"),
    (dict(keep_probability=0), "keep_probability"),
    (dict(keep_probability=1.5), "keep_probability"),
    (dict(mask_value=[1, 2]), "mask_value"),
    (dict(seed=-3), "seed"),
    (dict(mini_batch_size=0), "mini_batch_size"),
    (dict(score="odds"), "score"),
    (dict(execution_environment="tpu"), "execution_environment"),
])
def test_bad_options(tmp_path, rng, opts, message):
    model = _model(tmp_path, rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    with pytest.raises(explainer.InputError, match=message):
        rise(model, x, **{"num_masks": 8, **opts})
