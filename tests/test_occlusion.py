"""Occlusion sensitivity on tiny linear models whose maps are derived by hand."""

import numpy as np
import pytest

import explainer
from explainer.methods.occlusion import occlusion_grid
from tiny import brute_force_occlusion, linear_classifier

NONE = dict(output_upsampling="none", score="logit")


def _model(tmp_path, weights, **kw):
    return explainer.load_model(linear_classifier(tmp_path / "m.onnx", weights, **kw))


def test_hand_derived_map_4x4(tmp_path):
    # logit_0 = sum of pixels; all-ones 1x4x4 input; 3x3 masks, stride 2, clipped, value 0.
    # Centres 0 and 2 on each axis -> rows {0,1} and {1,2,3}: the four masks remove
    # 2x2=4 (A), 2x3=6 (B), 3x2=6 (C) and 3x3=9 (D) pixels of value 1. Row/col 0 is
    # covered by the first band only, 1 by both, 2 and 3 by the second only: e.g.
    # (0,0) -> A = 4, (1,1) -> (4+6+6+9)/4 = 6.25, (1,2) -> (B+D)/2 = 7.5.
    w = np.zeros((2, 1, 4, 4), np.float32)
    w[0] = 1.0
    model = _model(tmp_path, w, preprocessing={"size": [4, 4], "mean": [0], "std": [1]})
    x = np.ones((1, 1, 4, 4), np.float32)
    e = explainer.occlusion_sensitivity(model, x, 0, mask_size=3, stride=2, mask_value=0.0, **NONE)
    expected = np.array([[4, 5, 6, 6],
                         [5, 6.25, 7.5, 7.5],
                         [6, 7.5, 9, 9],
                         [6, 7.5, 9, 9]])
    np.testing.assert_allclose(e.map, expected, rtol=1e-6)
    assert e.timings["forward_passes"] == 1 + 4


def test_uncovered_pixels_are_nan_and_hatched(tmp_path):
    # clipping off, 2x2 masks at stride 3 on 5x5: rows/cols 2 are never covered. They are NaN
    # (not measured), not 0 ("no effect"), for every upsampling; the picture hatches them.
    w = np.ones((2, 1, 5, 5), np.float32)
    w[1] = 0
    model = _model(tmp_path, w)
    x = np.full((1, 1, 5, 5), 2.0, np.float32)
    covered = np.ones((5, 5), bool)
    covered[2, :] = covered[:, 2] = False
    for upsampling in ("none", "nearest", "bicubic"):
        e = explainer.occlusion_sensitivity(model, x, 0, mask_size=2, stride=3, mask_value=0.5,
                                            mask_clipping="off", output_upsampling=upsampling, score="logit")
        np.testing.assert_allclose(e.map[covered], 4 * 1.5, rtol=1e-5)
        assert np.all(np.isnan(e.map[~covered])) and e.params["uncovered_pixels"] == 9
    d = e.to_dict()
    assert d["map_min"] == pytest.approx(6.0) and d["map_max"] == pytest.approx(6.0)
    files = e.save(tmp_path / "out", "x")
    assert np.isnan(np.load(files[0])).sum() == 9 and files[1].stat().st_size > 1000
    full = explainer.occlusion_sensitivity(model, x, 0, mask_size=2, stride=2, **NONE)  # clipping on
    assert full.params["uncovered_pixels"] == 0 and np.all(np.isfinite(full.map))


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
@pytest.mark.parametrize("clipping", ["on", "off"])
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_matches_brute_force(tmp_path, rng, layout, clipping, score):
    w = rng.normal(size=(3, 3, 12, 10)).astype(np.float32) * 0.1
    model = _model(tmp_path, w, layout=layout)
    x = rng.normal(size=(1, 3, 12, 10)).astype(np.float32)
    e = explainer.occlusion_sensitivity(model, x, 1, mask_size=(4, 3), stride=(3, 2),
                                        mask_clipping=clipping, output_upsampling="none", score=score)

    def f(inp):
        z = np.einsum("kchw,chw->k", w.astype(np.float64), inp[0].astype(np.float64))
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        return (z if score == "logit" else p)[1]

    grid = occlusion_grid((12, 10), (4, 3), (3, 2), clipping)
    ref = brute_force_occlusion(f, x, grid.lo_y, grid.lo_x, (4, 3), x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(e.map, ref, rtol=1e-4, atol=1e-6)
    assert e.params["mask_value"] == pytest.approx(x.mean(axis=(0, 2, 3)).tolist(), rel=1e-6)


def test_probability_model_is_not_softmaxed_twice(tmp_path, rng):
    w = rng.normal(size=(3, 1, 6, 6)).astype(np.float32)
    x = rng.normal(size=(1, 1, 6, 6)).astype(np.float32)
    logits = _model(tmp_path, w)
    probs = explainer.load_model(linear_classifier(tmp_path / "p.onnx", w, softmax=True))
    assert probs.spec.output_kind == "probabilities"
    a = explainer.occlusion_sensitivity(logits, x, 2, mask_size=2, stride=2, output_upsampling="none")
    b = explainer.occlusion_sensitivity(probs, x, 2, mask_size=2, stride=2, output_upsampling="none")
    np.testing.assert_allclose(a.map, b.map, rtol=1e-4, atol=1e-6)
    # score="logit" on the Softmax model explains the logits before its Softmax (issue 12)
    c = explainer.occlusion_sensitivity(logits, x, 2, mask_size=2, stride=2, output_upsampling="none", score="logit")
    d = explainer.occlusion_sensitivity(probs, x, 2, mask_size=2, stride=2, output_upsampling="none", score="logit")
    np.testing.assert_allclose(c.map, d.map, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("upsampling", ["bicubic", "nearest", "none"])
def test_same_map_for_every_batch_size(tmp_path, rng, upsampling):
    w = rng.normal(size=(4, 3, 16, 16)).astype(np.float32)
    model = _model(tmp_path, w)
    x = rng.normal(size=(1, 3, 16, 16)).astype(np.float32)
    maps = [explainer.occlusion_sensitivity(model, x, 3, mask_size=5, stride=3, mini_batch_size=b,
                                            output_upsampling=upsampling).map
            for b in (1, 2, 3, 7, 10_000)]
    for m in maps[1:]:
        np.testing.assert_allclose(m, maps[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("batch", [1, 4])
def test_fixed_batch_models(tmp_path, rng, batch):
    w = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    x = rng.normal(size=(1, 3, 8, 8)).astype(np.float32)
    dynamic = _model(tmp_path, w)
    fixed = explainer.load_model(linear_classifier(tmp_path / "f.onnx", w, batch=batch))
    assert fixed.spec.fixed_batch_size == batch
    opts = dict(mask_size=3, stride=2, mini_batch_size=5, output_upsampling="none")
    a = explainer.occlusion_sensitivity(dynamic, x, 0, **opts)
    b = explainer.occlusion_sensitivity(fixed, x, 0, **opts)
    np.testing.assert_allclose(a.map, b.map, rtol=1e-5, atol=1e-7)


def test_upsampled_maps_pass_through_mask_centres(tmp_path, rng):
    # 3x3 masks at stride 4 with clipping off: centres at 1, 5, 9, 13. The bicubic
    # (interpolating spline) and nearest maps equal each mask's score change there.
    w = rng.normal(size=(2, 1, 16, 16)).astype(np.float32)
    model = _model(tmp_path, w)
    x = rng.normal(size=(1, 1, 16, 16)).astype(np.float32)
    opts = dict(mask_size=3, stride=4, mask_value=0.0, mask_clipping="off", score="logit")
    centres = np.array([1, 5, 9, 13])
    z = np.zeros((4, 4))
    for i, cy in enumerate(centres):
        for j, cx in enumerate(centres):
            z[i, j] = (w[0, 0, cy - 1:cy + 2, cx - 1:cx + 2] * x[0, 0, cy - 1:cy + 2, cx - 1:cx + 2]).sum()
    for mode in ("bicubic", "nearest"):
        m = explainer.occlusion_sensitivity(model, x, 0, output_upsampling=mode, **opts).map
        assert m.shape == (16, 16)
        np.testing.assert_allclose(m[np.ix_(centres, centres)], z, rtol=1e-4, atol=1e-5)
    nearest = explainer.occlusion_sensitivity(model, x, 0, output_upsampling="nearest", **opts).map
    np.testing.assert_allclose(nearest[0:3, 0:3], z[0, 0], rtol=1e-4)  # nearest centre: 1


@pytest.mark.parametrize("shape, mask, stride", [((224, 224), (45, 45), (22, 22)),
                                                 ((10, 20), (2, 4), (1, 2)),
                                                 ((3, 3), (1, 1), (1, 1))])
def test_auto_values(shape, mask, stride):
    g = occlusion_grid(shape)
    assert g.mask_size == mask and g.stride == stride
    assert len(g.lo_y) == (shape[0] - 1) // stride[0] + 1  # centres 0, s, 2s, ... <= H-1
    assert g.lo_y[0] == -((mask[0] - 1) // 2)
    off = occlusion_grid(shape, mask_clipping="off")
    assert off.lo_y[-1] + mask[0] <= shape[0] and off.lo_y[0] == 0


def test_records_resolved_options(tmp_path, rng):
    w = rng.normal(size=(2, 3, 20, 20)).astype(np.float32)
    model = _model(tmp_path, w)
    e = explainer.occlusion_sensitivity(model, rng.normal(size=(1, 3, 20, 20)).astype(np.float32))
    assert e.params["mask_size"] == [4, 4] and e.params["stride"] == [2, 2]
    assert e.params["num_masks"] == 100 and e.timings["forward_passes"] == 101
    assert e.map.shape == (20, 20) and e.map.dtype == np.float32
    assert e.target in (0, 1) and e.model_sha256 == model.spec.sha256


@pytest.mark.parametrize("opts, message", [
    (dict(mask_size=30), "larger than"),
    (dict(stride=-1), "stride must be positive"),
    (dict(stride=0), "stride must be positive"),
    (dict(mask_size="big"), "mask_size"),
    (dict(mask_value=[1, 2]), "mask_value"),
    (dict(output_upsampling="linear"), "output_upsampling"),
    (dict(mask_clipping="yes"), "mask_clipping"),
    (dict(mini_batch_size=0), "mini_batch_size"),
    (dict(score="odds"), "score"),
])
def test_bad_options(tmp_path, rng, opts, message):
    model = _model(tmp_path, rng.normal(size=(2, 3, 20, 20)).astype(np.float32))
    x = rng.normal(size=(1, 3, 20, 20)).astype(np.float32)
    with pytest.raises(ValueError, match=message):
        explainer.occlusion_sensitivity(model, x, **opts)


@pytest.mark.parametrize("target", [5, -1, "zebra"])
def test_bad_target(tmp_path, rng, target):
    model = _model(tmp_path, rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(ValueError, match="not a class"):
        explainer.occlusion_sensitivity(model, np.zeros((1, 3, 8, 8), np.float32), target)
