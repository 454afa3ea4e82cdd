"""Is the deconvnet grid with maxima on the top border the method or a bug? (issue #16)

Prints, for the bundled EfficientNet-Lite0 (class espresso, logit score):
1. how much the deconvnet map depends on the image (correlation between images, and
   with a flat grey image and noise): the deconvnet rule passes ReLU(g) backwards through
   every ReLU/ReLU6 and ignores the forward activations, and the model has no max-pooling
   switches, so with the logit score the backward pass never sees the image;
2. where its mass sits: mean of the map on the first/last rows and columns vs the inside;
3. its periodicity: the strongest periods of the row and column spectra (the strides);
4. that the Conv/padding backward, shared by all three ReLU rules, is right at the
   borders: the standard-rule gradient vs central finite differences at single pixels on
   the borders (at eps 0.02 some cross a ReLU6 kink; eps 0.001 does not).

Run: python benchmarks/deconvnet_evidence.py (about a minute on 2 cores).
"""

from __future__ import annotations

import numpy as np

import explainer
from explainer.imaging import read_image
from explainer.methods.common import load_input
from explainer.model import scores
from explainer.paths import bundled_examples


def main() -> None:
    model = explainer.load_model()
    k = model.spec.labels.index("espresso")
    rng = np.random.default_rng(0)
    images = {p.stem: str(p) for p in bundled_examples()}
    images["grey"] = np.full((224, 224, 3), 128, np.uint8)
    images["noise"] = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    images["flipped"] = read_image(images["chelsea"])[::-1].copy()  # chelsea upside down
    maps = {n: explainer.deconvnet(model, im, k, score="logit").map for n, im in images.items()}
    names = list(maps)
    flat = np.stack([maps[n].ravel() for n in names])
    corr = np.corrcoef(flat)
    prob = [explainer.deconvnet(model, images[n], k).map.ravel() for n in ("coffee", "chelsea", "flipped")]
    print("1. correlation of deconvnet maps (logit) between images:")
    for i, n in enumerate(names):
        print(f"   {n:8s} " + " ".join(f"{c:.4f}" for c in corr[i]))
    print("   with the probability score (coffee, chelsea, chelsea upside down): "
          + " ".join(f"{c:.4f}" for c in np.corrcoef(np.stack(prob))[np.triu_indices(3, 1)]))
    m = maps["coffee"]
    inside = m[8:-8, 8:-8].mean()
    print(f"2. mean on row 0 / last row / col 0 / last col, relative to the inside: "
          f"{m[0].mean() / inside:.2f} / {m[-1].mean() / inside:.2f} / {m[:, 0].mean() / inside:.2f} / "
          f"{m[:, -1].mean() / inside:.2f}; row 1: {m[1].mean() / inside:.2f}; rows of the 50 largest: "
          f"{sorted(set(np.unravel_index(np.argsort(-m.ravel())[:50], m.shape)[0].tolist()))}")
    rows = np.abs(np.fft.rfft(m - m.mean(), axis=1)).mean(axis=0)
    cols = np.abs(np.fft.rfft(m - m.mean(), axis=0)).mean(axis=1)
    for name, spec in (("rows", rows), ("columns", cols)):
        top = np.argsort(-spec[1:])[:5] + 1
        print(f"3. strongest periods along {name} (px): " + ", ".join(f"{224 / f:.1f}" for f in top))
    x = load_input(model, images["coffee"]).x
    g = explainer.gradient(model, x, k, score="logit").arrays["attributions"]
    print("4. standard gradient vs central finite differences (eps 0.02 and 0.001) at border pixels:")
    for y, xx in ((0, 0), (0, 111), (0, 223), (111, 0), (223, 111), (223, 223), (111, 111)):
        fds = []
        for eps in (0.02, 0.001):
            v = np.zeros_like(x)
            v[0, 1, y, xx] = eps
            f = [float(scores(model.predict(x + s * v), model.spec, "logit")[0, k]) for s in (1, -1)]
            fds.append((f[0] - f[1]) / (2 * eps))
        print(f"   pixel ({y:3d}, {xx:3d}): gradient {float(g[0, 1, y, xx]):+.6f}, "
              f"finite differences {fds[0]:+.6f}, {fds[1]:+.6f}")

if __name__ == "__main__":
    main()
