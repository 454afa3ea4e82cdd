"""Data-parallel CPU runs of gradient models: the plan, and answers that do not depend on it."""

import numpy as np
import pytest

import explainer
from explainer.backends import cpu_parallel, onnx_gradients
from explainer.backends.cpu_parallel import SessionSet, cpu_cores, plan, quota_cores, sample_bytes
from grad_check import weights
from tiny import linear_classifier

MIB = 2**20


@pytest.mark.parametrize("n, per_sample, cores, fixed, expected", [
    (1, 50 * MIB, 2, None, (1, 1, 0)),        # one sample: one session with all threads
    (32, 50 * MIB, 2, None, (1, 2, 1)),       # big activations: single samples, a session per core
    (10, 1024, 2, None, (5, 2, 1)),           # small ones: one piece per core
    (10, 1024, 1, None, (10, 1, 0)),          # one core: the whole batch at once
    (100, 4 * MIB, 16, None, (4, 8, 2)),      # 16 MiB / 4 MiB = 4 per piece; at most 8 sessions
    (5, 50 * MIB, 2, 3, (3, 2, 1)),           # a fixed batch size sets the piece
    (3, 0, 4, None, (1, 3, 1)),               # unknown activation size: as small as the cores ask
])
def test_plan(n, per_sample, cores, fixed, expected):
    assert plan(n, per_sample, cores, fixed) == expected
    chunk, workers, _ = expected
    assert workers <= -(-n // chunk)


@pytest.mark.parametrize("text, expected", [
    ("max 100000\n", None), ("200000 100000\n", 2), ("150000 100000", 1), ("50000 100000", 1),
    ("", None), ("garbage", None), ("x 100000", None), ("0 100000", None)])
def test_cgroup_quota_caps_the_cores(text, expected):
    assert quota_cores(text) == expected
    assert 1 <= cpu_cores()


def test_sample_bytes_counts_each_intermediate_tensor_per_sample(tmp_path):
    import onnx

    w = np.zeros((4, 3, 5, 6), np.float32)
    plain = onnx.load(str(linear_classifier(tmp_path / "a.onnx", w)))
    soft = onnx.load(str(linear_classifier(tmp_path / "b.onnx", w, softmax=True)))
    assert sample_bytes(plain) == 3 * 5 * 6 * 4             # "flat" (N, 90)
    assert sample_bytes(soft) == 3 * 5 * 6 * 4 + 4 * 4      # and the logits "z" (N, 4)


def test_run_pieces_keeps_order_and_builds_one_session_per_worker(tmp_path):
    path = linear_classifier(tmp_path / "m.onnx", np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2))
    sessions = SessionSet(path.read_bytes(), ["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(7, 1, 2, 2)).astype(np.float32)
    whole = sessions.run_pieces(7, lambda s, part: s.run(None, {"input": x[part]})[0], 7, 1, 0)[0]
    for chunk, workers in ((1, 3), (2, 3), (3, 2), (7, 1)):
        parts = sessions.run_pieces(7, lambda s, part: s.run(None, {"input": x[part]})[0], chunk, workers, 1)
        assert [len(p) for p in parts] == [min(chunk, 7 - i) for i in range(0, 7, chunk)]
        np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)
    assert len(sessions.sessions[1]) == 3 and len(sessions.sessions[0]) == 1


def test_planned_gradients_equal_one_session_and_the_analytic_gradient(tmp_path, monkeypatch, rng):
    """Softmax of a linear map: d p_k / d x = p_k (W_k - sum_j p_j W_j), whatever the plan."""
    w = rng.normal(size=(3, 3, 4, 4)).astype(np.float32)
    model = explainer.load_model(linear_classifier(tmp_path / "s.onnx", w, softmax=True), device="cpu")
    x = rng.normal(size=(7, 3, 4, 4)).astype(np.float32)
    wl, wp = weights(rng, 7, 3)
    monkeypatch.setattr(onnx_gradients, "cpu_cores", lambda: 1)
    out1, g1, _ = model.gradients(x, wl, wp)
    sessions = model._gradient_sessions[(None, "standard")]
    assert set(sessions.sessions) == {0}
    monkeypatch.setattr(onnx_gradients, "cpu_cores", lambda: 3)
    monkeypatch.setattr(cpu_parallel, "CHUNK_BYTES", 2 * sessions.sample_bytes)  # pieces of 2: 2, 2, 2, 1
    assert plan(7, sessions.sample_bytes, 3) == (2, 3, 1)
    out3, g3, _ = model.gradients(x, wl, wp)
    assert len(sessions.sessions[1]) == 3
    np.testing.assert_allclose(out3, out1, rtol=1e-6)
    np.testing.assert_allclose(g3, g1, rtol=1e-5, atol=1e-7)
    z = x.reshape(7, -1) @ w.reshape(3, -1).T
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    wf = w.reshape(3, -1)
    expected = np.einsum("nk,nkd->nd", wp * p, wf[None] - (p @ wf)[:, None]) + wl @ wf
    np.testing.assert_allclose(g3.reshape(7, -1), expected, rtol=1e-4, atol=1e-5)
