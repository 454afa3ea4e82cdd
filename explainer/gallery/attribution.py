"""MATLAB's "Investigate Classification Decisions Using Gradient Attribution Techniques" and
Zintgraf et al.'s prediction difference figures (marginal vs conditional sampling, a hidden unit)."""

from __future__ import annotations

from typing import Any

from ..methods.activations import activations
from ..methods.common import load_input
from ..methods.gradient_maps import deconvnet, gradient, guided_backprop
from ..methods.integrated_gradients import integrated_gradients
from ..methods.prediction_difference import prediction_difference
from ..paths import bundled_examples
from ..visualization.rules import DisplayOptions
from . import Figure
from .context import Context
from .drawing import explained, figure, picture

GRADIENT_PAGE = "MATLAB: Investigate Classification Decisions Using Gradient Attribution Techniques"
PD_PAGE = "Zintgraf et al. 2017: Visualizing Deep Neural Network Decisions: Prediction Difference Analysis"
IMAGE = "chelsea"


def _image(ctx: Context) -> Any:
    return ctx.once("chelsea", lambda: load_input(ctx.model, ctx.examples[IMAGE]))


def gradient_page(ctx: Context) -> bytes:
    inp = _image(ctx)
    maps = [(gradient(ctx.model, inp), "saliency (gradient)"),
            (guided_backprop(ctx.model, inp), "guided backpropagation"),
            (deconvnet(ctx.model, inp), "Zeiler-Fergus (deconvnet)"),
            (integrated_gradients(ctx.model, inp, num_steps=ctx.settings.ig_steps),
             f"integrated gradients ({ctx.settings.ig_steps} steps)")]
    e0 = maps[0][0]
    return figure([picture(inp.original, f"{IMAGE}.png: {e0.label} ({e0.score:.2f})"),
                   *[explained(e, title, DisplayOptions(view="crop")) for e, title in maps]],
                  title="Gradient attribution methods side by side on the model's input (|attribution| "
                        "summed over channels, 99th-percentile clipped)", width=3.9, height=3.3)


def _pd(ctx: Context, sampling: str, **kw: Any) -> Any:
    s = ctx.settings
    data = bundled_examples()[0].parent
    return prediction_difference(ctx.model, _image(ctx), window_size=s.pd_window,
                                 stride=kw.pop("stride", s.pd_stride), num_samples=s.pd_samples,
                                 sampling=sampling, data=data, **kw)


def pd_marginal_conditional(ctx: Context) -> bytes:
    inp = _image(ctx)
    runs = [(_pd(ctx, "marginal"), "marginal sampling"), (_pd(ctx, "conditional"), "conditional sampling")]
    e0 = runs[0][0]
    s = ctx.settings
    return figure([picture(inp.original, f"{IMAGE}.png: {e0.label} ({e0.score:.2f})"),
                   *[explained(e, f"{title}: evidence for {e.label}") for e, title in runs]],
                  title=f"Prediction difference, window {s.pd_window}, stride {s.pd_stride}, "
                        f"{s.pd_samples} samples per window (red: for, blue: against)", width=4.2, height=3.5)


def pd_hidden_unit(ctx: Context) -> bytes:
    inp = _image(ctx)
    layer = ctx.model.default_feature_layer()
    act = activations(ctx.model, inp, layer=layer, num_channels=1)
    unit = int(act.params["channel"])
    e = _pd(ctx, "conditional", layer=layer, unit=unit, stride=ctx.settings.pd_unit_stride)
    return figure([picture(inp.original, f"{IMAGE}.png"),
                   explained(act, f"activation of unit {unit}"),
                   explained(e, f"prediction difference for unit {unit}\n(activation difference)")],
                  title=f"A hidden unit: {layer}, channel {unit} (its strongest on this image)",
                  width=4.2, height=3.5)


FIGURES = [
    Figure("attribution-methods", GRADIENT_PAGE, "Saliency, guided backpropagation, Zeiler-Fergus "
           "deconvnet and integrated gradients on one image, by the pixel-attribution display rule. "
           "Deconvnet's grid is the method on a network without max-pooling "
           "([docs/deconvnet.md](../deconvnet.md)).", gradient_page),
    Figure("prediction-difference-sampling", PD_PAGE, "Weight of evidence with marginal sampling "
           "(patches from other images) and conditional sampling (a Gaussian over the surrounding "
           "patch): conditional sampling is sharper, as in the paper's Figure 2.",
           pd_marginal_conditional),
    Figure("prediction-difference-hidden-unit", PD_PAGE, "The paper's section 3.3: which image "
           "regions drive one hidden unit (activation difference), next to the unit's activation.",
           pd_hidden_unit),
]
