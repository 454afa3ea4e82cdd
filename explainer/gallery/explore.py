"""MATLAB's "Explore Network Predictions Using Deep Learning Visualization Techniques", on the
bundled EfficientNet-Lite0 (coffee.png) and, for the dataset views, the shortcut demo's test set."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..dataset import extremes, grid_png, list_images, load_folder, tsne
from ..methods.activations import activations
from ..methods.common import load_input
from ..methods.deep_dream import deep_dream
from ..methods.grad_cam import grad_cam
from ..methods.gradient_maps import gradient, guided_backprop
from ..methods.lime import lime
from ..methods.occlusion import occlusion_sensitivity
from . import Figure
from .context import Context, shortcut_dir
from .drawing import bars, explained, figure, picture, top_k

PAGE = "MATLAB: Explore Network Predictions Using Deep Learning Visualization Techniques"
IMAGE = "coffee"
DREAMS = ("espresso", "tiger cat", "missile")


def _image(ctx: Context) -> Any:
    return ctx.once("coffee", lambda: load_input(ctx.model, ctx.examples[IMAGE]))


def top3(ctx: Context) -> bytes:
    inp = _image(ctx)
    labels, probs = top_k(ctx.probabilities(ctx.model, inp.x)[0], ctx.model.spec.labels)
    return figure([picture(inp.original, f"{IMAGE}.png ({inp.image_size[1]}x{inp.image_size[0]})"),
                   bars(labels, probs, "top-3 classes")], title="Classify: the three highest scores",
                  width=4.2, height=3.0)


def _activations(ctx: Context, layer: str, what: str) -> bytes:
    e = activations(ctx.model, _image(ctx), layer=layer, num_channels=12)
    c = e.params["channel"]
    return figure([picture(e.images["tile"], ""),
                   explained(e, f"strongest channel ({c}) over the image")],
                  title=f"Activations of {what} layer {layer} ({e.params['shape'][0]} channels, "
                        f"{e.params['shape'][1]}x{e.params['shape'][2]})", width=4.6, height=4.4)


def activations_early(ctx: Context) -> bytes:
    return _activations(ctx, ctx.layer_at(ctx.model, 2), "an early")


def activations_deep(ctx: Context) -> bytes:
    return _activations(ctx, ctx.model.default_feature_layer(), "a deep")


def grad_cam_layers(ctx: Context) -> bytes:
    deep, shallow = ctx.model.default_feature_layer(), ctx.layer_at(ctx.model, 8)
    maps = [grad_cam(ctx.model, _image(ctx), feature_layer=layer) for layer in (deep, shallow)]
    return figure([explained(e, f"Grad-CAM at {e.params['feature_layer']}\n"
                                f"({e.params['feature_map_shape'][0]}x{e.params['feature_map_shape'][1]})")
                   for e in maps], title=f"Grad-CAM of {maps[0].label}: deep vs shallow layer", width=4.4)


def _single(e: Any, title: str) -> bytes:
    return figure([explained(e, f"{e.label} ({e.score:.2f})")], title=title, width=5.2, height=4.0)


def occlusion_figure(ctx: Context) -> bytes:
    e = occlusion_sensitivity(ctx.model, _image(ctx), stride=ctx.settings.occlusion_stride)
    return _single(e, f"Occlusion sensitivity (mask {e.params['mask_size'][0]}, stride {e.params['stride'][0]})")


def lime_figure(ctx: Context) -> bytes:
    e = lime(ctx.model, _image(ctx), num_samples=ctx.settings.lime_samples)
    return _single(e, f"LIME ({e.params['num_features']} superpixels, {ctx.settings.lime_samples} samples)")


def gradient_figure(ctx: Context) -> bytes:
    return _single(gradient(ctx.model, _image(ctx)), "Gradient attribution (saliency)")


def guided_figure(ctx: Context) -> bytes:
    return _single(guided_backprop(ctx.model, _image(ctx)), "Guided backpropagation")


def dream_figure(ctx: Context) -> bytes:
    labels = ctx.model.spec.labels
    s = ctx.settings
    e = deep_dream(ctx.model, channels=[labels.index(c) for c in DREAMS], num_iterations=s.dream_iterations,
                   pyramid_levels=s.dream_levels)
    panels = [picture(img, f"{lab} (p = {p:.2f})") for img, lab, p
              in zip(e.images.values(), e.params["labels"], e.params["probability_end"])]
    return figure(panels, title=f"Deep dream of classes ({e.params['pyramid_levels']} octaves, "
                                f"{e.params['num_iterations']} iterations each, jitter {e.params['jitter']} px)",
                  width=3.4, height=3.6)


def _shortcut_set(ctx: Context) -> Any:
    def load() -> Any:
        listing = list_images(shortcut_dir() / "testset")
        x, pixels = load_folder(ctx.shortcut, listing.paths)
        return listing, x, pixels, ctx.probabilities(ctx.shortcut, x)
    return ctx.once("shortcut-set", load)


def tsne_figure(ctx: Context) -> bytes:
    import matplotlib.pyplot as plt

    listing, x, _, probs = _shortcut_set(ctx)
    layer = ctx.shortcut.default_feature_layer()
    feats = ctx.shortcut.activations(x, [layer])[layer]
    coords, perplexity = tsne(feats.reshape(len(feats), -1), seed=0)
    labels = ctx.shortcut.spec.labels
    predicted = [labels[k] for k in probs.argmax(axis=1)]

    def scatter(classes: list, title: str) -> Any:
        def panel(fig: Any, ax: Any) -> None:
            for i, c in enumerate(sorted(set(classes))):
                sel = np.array([k == c for k in classes])
                ax.scatter(coords[sel, 0], coords[sel, 1], s=30, color=plt.cm.tab10(i), label=c)
            ax.legend(fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=10)
        return panel
    return figure([scatter([str(t) for t in listing.truth], "coloured by true class"),
                   scatter(predicted, "coloured by predicted class")],
                  title=f"t-SNE of {layer} (shortcut demo test set, perplexity {perplexity:.3g})", width=4.4)


def extremes_figure(ctx: Context) -> bytes:
    listing, _, pixels, probs = _shortcut_set(ctx)
    labels = ctx.shortcut.spec.labels
    rows, titles, caps = [], [], []
    for c, name in enumerate(labels):
        high, low = extremes(probs[:, c], 4)
        for kind, idx in (("most", high), ("least", low)):
            rows.append([pixels[i] for i in idx])
            titles.append(f"{kind} {name}")
            caps.append([f"{listing.paths[i].stem} {probs[i, c]:.2f}" for i in idx])
    return grid_png(rows, titles, caps)


FIGURES = [
    Figure("explore-top3", PAGE, "The image (whole, as read) and the model's three highest scores.", top3),
    Figure("explore-activations-early", PAGE, "The first 12 channels of an early layer on one grey scale "
           "(edges, colours, texture) and its strongest channel over the image.", activations_early),
    Figure("explore-activations-deep", PAGE, "The same for the deep layer Grad-CAM uses: the strongest "
           "channel fires on the cup.", activations_deep),
    Figure("explore-grad-cam", PAGE, "Grad-CAM at the deep default feature layer vs a shallower layer "
           "(finer, noisier).", grad_cam_layers),
    Figure("explore-occlusion", PAGE, "Occlusion sensitivity: the drop in probability when a patch is "
           "greyed out; the dashed box is the model's centre crop.", occlusion_figure),
    Figure("explore-lime", PAGE, "LIME with a tree surrogate over superpixels.", lime_figure),
    Figure("explore-gradient", PAGE, "Gradient attribution, 99th-percentile clipped, over a grey photo.",
           gradient_figure),
    Figure("explore-guided-backprop", PAGE, "Guided backpropagation, same display rule.", guided_figure),
    Figure("explore-deep-dream", PAGE, "Deep dream of the three examples' classes from a grey start "
           "(probability of the class on the dream).", dream_figure),
    Figure("explore-tsne", PAGE, "t-SNE of the shortcut demo's deep activations: the watermarked "
           "squares and triangles sit with the circles.", tsne_figure),
    Figure("explore-max-min", PAGE, "Most and least activating images per class of the shortcut demo: "
           "every 'most circle' image carries the corner watermark.", extremes_figure),
]
