"""Issue 20 (2): integrated gradients adds steps until the completeness gap is under the tolerance
(num_steps the cap, reported), warns at the cap, and is byte-identical across mini-batch sizes."""

from pathlib import Path

import numpy as np
import pytest

import explainer
from explainer.methods.integrated_gradients import integrated_gradients, step_schedule

SHORTCUT = Path(__file__).resolve().parents[1] / "models" / "shortcut"
IMAGE = SHORTCUT / "testset" / "triangle" / "triangle_03.png"  # logit gaps 5.6%, 2.6%, 1.4%, 0.6% at 25..200


@pytest.fixture(scope="module")
def shortcut():
    return explainer.load_model(SHORTCUT / "model.onnx")


def test_schedule():
    assert step_schedule(800, 0.01) == [25, 50, 100, 200, 400, 800]
    assert step_schedule(300, 0.01) == [25, 50, 100, 200, 300]
    assert step_schedule(7, 0.01) == [7] and step_schedule(800, 0.0) == [800]


@pytest.mark.parametrize("rule, tol", [("riemann_right", 0.01), ("trapezoid", 0.001)])
def test_adaptive_steps_stop_under_the_tolerance_and_equal_a_fixed_run(shortcut, rule, tol, capsys):
    # trapezoid gaps 0.65%, 0.13%, 0.11%, 0.005% at 25..200
    e = integrated_gradients(shortcut, IMAGE, integration=rule, score="logit", completeness_tolerance=tol)
    history = e.params["completeness_history"]
    m = e.params["num_steps_used"]
    assert len(history) >= 2 and history[-1] == [m, e.params["completeness_gap"]]
    assert e.params["completeness_gap"] <= tol and all(g > tol for _, g in history[:-1])
    assert e.timings["forward_passes"] == 2 + m + (rule == "trapezoid")  # every gradient reused
    fixed = integrated_gradients(shortcut, IMAGE, integration=rule, score="logit", num_steps=m,
                                 completeness_tolerance=0)
    assert fixed.params["num_steps_used"] == m and len(fixed.params["completeness_history"]) == 1
    np.testing.assert_allclose(e.arrays["attributions"], fixed.arrays["attributions"], rtol=1e-5, atol=1e-9)
    assert "warning" not in capsys.readouterr().err


def test_gap_over_the_tolerance_at_the_cap_warns(shortcut, capsys):
    e = integrated_gradients(shortcut, IMAGE, score="logit", num_steps=3, completeness_tolerance=1e-9)
    assert e.params["num_steps_used"] == 3 and e.params["completeness_gap"] > 1e-9
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "completeness gap" in err[0] and "at the cap of 3 steps" in err[0]
    assert "completeness gap" in e.params["warnings"][0]


def test_byte_identical_across_mini_batch_sizes():
    """The bundled model at 25 steps: summing each batch first made 77 of 150,528 values differ."""
    model = explainer.load_model()
    runs = [integrated_gradients(model, "models/efficientnet_lite0/examples/chelsea.png", num_steps=25,
                                 completeness_tolerance=0, mini_batch_size=b) for b in (5, 25)]
    assert runs[1].arrays["attributions"].tobytes() == runs[0].arrays["attributions"].tobytes()
