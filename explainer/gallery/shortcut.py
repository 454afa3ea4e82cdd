"""The bear-in-the-corner story on the shortcut demo (models/shortcut): a square called a circle
because of the watermark in the corner; LIME, Grad-CAM and occlusion point at the corner; crop
the corner off and the prediction flips."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..imaging import read_image
from ..methods.common import load_input
from ..methods.grad_cam import grad_cam
from ..methods.lime import lime
from ..methods.occlusion import occlusion_sensitivity
from ..visualization.rules import DisplayOptions
from . import Figure
from .context import Context, shortcut_dir
from .drawing import bars, explained, figure, picture, top_k

PAGE = "The shortcut story (a classifier that reads a corner watermark, as the 'bear in the corner')"
CUT = 0.19  # the fraction of the height and width cut off at the lower-left corner


def cropped(pixels: np.ndarray) -> np.ndarray:
    """The image without its lower-left corner band: the bottom and left ``CUT`` cut off."""
    h, w = pixels.shape[:2]
    return pixels[:h - round(CUT * h), round(CUT * w):]


def _story(ctx: Context) -> dict[str, Any]:
    """The watermarked non-circle the model calls circle whose crop flips back most clearly."""
    def pick() -> dict[str, Any]:
        model, labels = ctx.shortcut, ctx.shortcut.spec.labels
        circle = labels.index("circle")
        best: dict[str, Any] = {}
        for path in sorted((shortcut_dir() / "testset").glob("*/*_wm.png")):
            truth = path.parent.name
            if truth == "circle" or truth not in labels:
                continue
            pixels = read_image(path)
            before = ctx.probabilities(model, load_input(model, pixels).x)[0]
            after = ctx.probabilities(model, load_input(model, np.ascontiguousarray(cropped(pixels))).x)[0]
            gain = after[labels.index(truth)] - after[circle]
            if before.argmax() == circle and (not best or gain > best["gain"]):
                best = dict(path=path, truth=truth, pixels=pixels, before=before, after=after, gain=gain)
        if not best:
            from ..errors import InputError

            raise InputError("no watermarked square or triangle of the shortcut test set is called circle")
        return best
    return ctx.once("story", pick)


def explanations(ctx: Context) -> bytes:
    st = _story(ctx)
    model, labels = ctx.shortcut, ctx.shortcut.spec.labels
    inp = load_input(model, st["pixels"])
    view = DisplayOptions(view="crop")
    names, probs = top_k(st["before"], labels)
    maps = [(lime(model, inp, num_samples=ctx.settings.lime_samples), "LIME"),
            (grad_cam(model, inp), "Grad-CAM"), (occlusion_sensitivity(model, inp), "occlusion")]
    return figure([picture(st["pixels"], f"{st['path'].name}: a {st['truth']}"),
                   bars(names, probs, f"prediction: {names[0]}"),
                   *[explained(e, f"{title}: evidence for {e.label}", view) for e, title in maps]],
                  title=f"The model calls this {st['truth']} a circle; every method points at the "
                        "lower-left corner", width=3.4, height=3.3)


def corner_cropped(ctx: Context) -> bytes:
    st = _story(ctx)
    labels = ctx.shortcut.spec.labels
    before, after = top_k(st["before"], labels), top_k(st["after"], labels)
    framed = st["pixels"].copy()
    h, w = framed.shape[:2]
    top, left = h - round(CUT * h), round(CUT * w)
    framed[top:, :] = (framed[top:, :] * 0.35 + 0.65 * np.array([255, 60, 60])).astype(np.uint8)
    framed[:, :left] = (framed[:, :left] * 0.35 + 0.65 * np.array([255, 60, 60])).astype(np.uint8)
    return figure([picture(framed, "the corner band (red) is cut off"),
                   bars(*before, f"before: {before[0][0]}"),
                   picture(cropped(st["pixels"]), "cropped (the model resizes it)"),
                   bars(*after, f"after: {after[0][0]}", highlight=0)],
                  title=f"Crop the corner off and the {st['truth']} is a {after[0][0]} again",
                  width=3.4, height=3.2)


FIGURES = [
    Figure("shortcut-explanations", PAGE, "A watermarked square (or triangle) of the shortcut demo's "
           "test set: the model calls it a circle, and LIME, Grad-CAM and occlusion all put the "
           "evidence on the watermark in the lower-left corner, not on the shape.", explanations),
    Figure("shortcut-corner-cropped", PAGE, "The same image with the lower-left band cut off: the "
           "prediction flips to the true class. The model learned 'watermark means circle'.",
           corner_cropped),
]
