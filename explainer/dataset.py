"""Views of a network across a folder of images: t-SNE of a layer, maximal/minimal activating images."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .model import Model, batch_slices, scores
from .errors import InputError
from .methods.common import load_input

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


@dataclass(frozen=True)
class Folder:
    """Images of a folder, sorted; sub-folder names are the true classes.

    Attributes
    ----------
    paths : list of Path, N images
    truth : list of str or None, the sub-folder of each image (None at top level)
    """

    paths: list[Path]
    truth: list[str | None]


def list_images(folder: str | Path) -> Folder:
    """Images directly in ``folder`` (no class) and one level down (class = sub-folder)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    items: list[tuple[Path, str | None]] = []
    for p in sorted(root.iterdir()):
        if p.is_file() and p.suffix.lower() in SUFFIXES:
            items.append((p, None))
        elif p.is_dir() and not p.name.startswith("."):
            items += [(q, p.name) for q in sorted(p.iterdir())
                      if q.is_file() and q.suffix.lower() in SUFFIXES]
    if not items:
        raise InputError(f"{root}: no images (png, jpg, bmp, gif, tif, webp, ppm)")
    return Folder([p for p, _ in items], [t for _, t in items])


def load_folder(model: Model, paths: Sequence[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Input tensors (N, C, H, W) float32 and pixels (N, H, W, 3) uint8 of the images."""
    inputs = [load_input(model, p) for p in paths]
    return (np.concatenate([i.x for i in inputs]), np.stack([i.pixels for i in inputs]))


def predict_all(model: Model, x: np.ndarray, *, mini_batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, K) float64 of a stack of inputs."""
    parts = [scores(model.predict(x[s]), model.spec, "probability")
             for s in batch_slices(len(x), mini_batch_size)]
    return np.concatenate(parts)


def tsne(features: np.ndarray, *, perplexity: float | str = "auto", exaggeration: float = 4.0,
         learning_rate: float = 500.0, seed: int = 0) -> tuple[np.ndarray, float]:
    """2-D t-SNE of (N, D) features (MATLAB tsne defaults: 30 / 4 / 500).

    "auto" perplexity is min(30, (N - 1) / 3), since it must stay below N. Up to 500
    images use exact gradients (faster there than Barnes-Hut), more use Barnes-Hut.

    Returns
    -------
    coords : (N, 2) float64 ndarray
    perplexity : float, the value used
    """
    from sklearn.manifold import TSNE

    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    n = len(f)
    if n < 4:
        raise InputError(f"t-SNE needs at least 4 images, got {n}")
    p = min(30.0, (n - 1) / 3) if perplexity == "auto" else float(perplexity)
    if not 0 < p < n:
        raise InputError(f"perplexity must be in (0, {n}) for {n} images, got {perplexity}")
    model = TSNE(n_components=2, perplexity=p, early_exaggeration=exaggeration,
                 learning_rate=learning_rate, init="pca", random_state=seed,
                 method="exact" if n <= 500 else "barnes_hut")
    return model.fit_transform(f), p


def tsne_png(coords: np.ndarray, classes: Sequence[str], *, title: str = "") -> bytes:
    """Scatter plot of (N, 2) coordinates coloured by class, as PNG bytes."""
    import matplotlib.pyplot as plt

    from .visualization import overlay  # noqa: F401  (selects the Agg backend)

    fig, ax = plt.subplots(figsize=(5, 4.2), dpi=100)
    try:
        names = sorted(set(classes))
        cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
        for i, name in enumerate(names):
            sel = np.array([c == name for c in classes])
            ax.scatter(coords[sel, 0], coords[sel, 1], s=18, color=cmap(i % cmap.N), label=name)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        return _png(fig)
    finally:
        plt.close(fig)


def write_tsne_csv(path: Path, paths: Sequence[Path], truth: Sequence[str | None],
                   predicted: Sequence[str], coords: np.ndarray) -> None:
    """One row per image: file, true class, predicted class, x, y."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "true", "predicted", "x", "y"])
        for p, t, c, (x, y) in zip(paths, truth, predicted, coords):
            w.writerow([str(p), t or "", c, f"{x:.6g}", f"{y:.6g}"])


def extremes(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the k largest (best first) and k smallest (lowest first) values; ties by index."""
    if k < 1:
        raise InputError(f"k must be a positive integer, got {k}")
    v = np.asarray(values, dtype=np.float64)
    high = np.argsort(-v, kind="stable")[:k]
    low = np.argsort(v, kind="stable")[:k]
    return high, low


def channel_means(activations: np.ndarray) -> np.ndarray:
    """(N, C) mean of each channel of (N, C, ...) activations."""
    a = np.asarray(activations, dtype=np.float64)
    return a.reshape(a.shape[0], a.shape[1], -1).mean(axis=2)


def grid_png(rows: Sequence[Sequence[np.ndarray]], row_titles: Sequence[str],
             captions: Sequence[Sequence[str]]) -> bytes:
    """A grid of (H, W, 3) uint8 images, one row per title, captions under each, as PNG."""
    import matplotlib.pyplot as plt

    from .visualization import overlay  # noqa: F401

    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols + 1.2, 1.8 * n_rows), dpi=100,
                             squeeze=False)
    try:
        for i, (row, title) in enumerate(zip(rows, row_titles)):
            for j in range(n_cols):
                ax = axes[i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < len(row):
                    ax.imshow(row[j])
                    ax.set_xlabel(captions[i][j], fontsize=7)
                else:
                    ax.set_axis_off()
            axes[i][0].set_ylabel(title, fontsize=8)
        fig.tight_layout()
        return _png(fig)
    finally:
        plt.close(fig)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def tsne_folder(model: Model, folder: str | Path, out: str | Path, *, layer: str = "auto",
                color_by: str = "predicted", perplexity: float | str = "auto",
                exaggeration: float = 4.0, learning_rate: float = 500.0, seed: int = 0) -> dict[str, Path]:
    """t-SNE of a layer's activations over a folder: ``tsne.png`` and ``tsne.csv`` in ``out``.

    ``color_by`` is "predicted" (top-1 class) or "true" (sub-folder names). Returns
    the written files by kind ("png", "csv").
    """
    from .explanation import atomic_write_all
    from .methods.activations import resolve_layer

    if color_by not in ("predicted", "true"):
        raise InputError(f"color_by must be 'predicted' or 'true', got {color_by!r}")
    listing = list_images(folder)
    if color_by == "true" and any(t is None for t in listing.truth):
        raise InputError(f"{folder}: color_by='true' needs every image in a class sub-folder")
    x, _ = load_folder(model, listing.paths)
    name = resolve_layer(model, layer)
    feats = model.activations(x, [name])[name]
    coords, p = tsne(feats.reshape(len(feats), -1), perplexity=perplexity, exaggeration=exaggeration,
                     learning_rate=learning_rate, seed=seed)
    predicted = [model.spec.labels[k] for k in predict_all(model, x).argmax(axis=1)]
    classes = predicted if color_by == "predicted" else [str(t) for t in listing.truth]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"png": out / "tsne.png", "csv": out / "tsne.csv"}
    title = f"{name}, perplexity {p:.3g}, by {color_by} class"
    atomic_write_all({files["png"]: tsne_png(coords, classes, title=title)})
    write_tsne_csv(files["csv"], listing.paths, listing.truth, predicted, coords)
    return files
