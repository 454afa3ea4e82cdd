"""The audit's self-contained HTML report (images embedded as base64 PNG)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset import extremes, grid_png, tsne, tsne_png, write_tsne_csv
from ..errors import InputError
from ..explanation import Explanation, atomic_write_all, png_bytes
from ..methods.activations import resolve_layer
from .findings import mean_map
from .records import Audit
from .sanity import sanity_section
from .verdict import headlines
from ..visualization.rules import blend, shown
from ..visualization.tiles import with_colorbar

CSS = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #bbb;padding:3px 6px;text-align:center;font-size:13px}th{background:#eee}
.flag{background:#fdd;font-weight:bold}.ok{color:#070}img{image-rendering:pixelated;display:block}
figure{display:inline-block;margin:4px;text-align:center;font-size:12px}
.verdict{border:2px solid #c33;border-radius:6px;padding:.2em 1em;margin:1em 0;max-width:60em}
.verdict p{font-size:17px;padding:4px}details{margin:.4em 0}summary{cursor:pointer;font-weight:bold}"""


def overlay(pixels: np.ndarray, relevance: np.ndarray, display: str = "jet", *, scale: int = 2,
            method: str = "", bar: bool = True) -> np.ndarray:
    """The map over the pixels by its kind's display rule (``explainer.visualization.rules``),
    enlarged ``scale`` times, with a colour bar giving its range.

    Returns
    -------
    (H * scale, W * scale + bar width, 3) uint8 ndarray
    """
    e = Explanation(map=np.asarray(relevance, np.float32), target=0, label="", score=0.0, method=method,
                    params={}, display=display)
    s = shown(e)
    rgb = blend(np.asarray(pixels, np.float64).round().clip(0, 255).astype(np.uint8), s)
    big = np.kron(rgb, np.ones((scale, scale, 1), np.uint8))
    return with_colorbar(big, s.cmap, s.vmin, s.vmax) if bar else big


def img(data: bytes | np.ndarray, alt: str, width: int | None = None) -> str:
    """An <img> tag with the PNG embedded."""
    raw = data if isinstance(data, bytes) else png_bytes(data)
    w = f' width="{width}"' if width else ""
    return (f'<img alt="{html.escape(alt)}"{w} src="data:image/png;base64,'
            f'{base64.b64encode(raw).decode()}">')


def _fig(content: str, caption: str) -> str:
    return f"<figure>{content}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _confusion(a: Audit) -> tuple[str, float | None]:
    labels = a.model.spec.labels
    truths = sorted({t for t in a.truth if t is not None})
    if not truths:
        return "<p>No true classes (images are not in sub-folders).</p>", None
    cols = sorted(set(a.predicted.tolist()) | {labels.index(t) for t in truths if t in labels})
    head = "".join(f"<th>{html.escape(labels[c])}</th>" for c in cols)
    rows, hits, n = [], 0, 0
    for t in truths:
        idx = [i for i, x in enumerate(a.truth) if x == t]
        counts = [sum(int(a.predicted[i]) == c for i in idx) for c in cols]
        hits += sum(labels[int(a.predicted[i])] == t for i in idx)
        n += len(idx)
        cells = "".join(f"<td>{k}</td>" for k in counts)
        rows.append(f"<tr><th>{html.escape(t)}</th>{cells}</tr>")
    acc = hits / n
    table = (f"<p>Accuracy: <b>{acc:.3f}</b> ({hits}/{n} images in class sub-folders)</p>"
             f"<table><tr><th>true \\ predicted</th>{head}</tr>{''.join(rows)}</table>")
    return table, acc


def _findings(a: Audit) -> str:
    rows = []
    for f in a.findings:
        cls = ' class="flag"' if f.flagged else ""
        verdict = "SPURIOUS REGION" if f.flagged else '<span class="ok">no</span>'
        rows.append(f"<tr{cls}><td>{html.escape(f.method)}</td><td>{html.escape(f.label)}</td>"
                    f"<td>{f.images}</td><td>{html.escape(f.region)}</td><td>{f.consistency:.2f}</td>"
                    f"<td>{f.concentration:.2f}</td><td>{verdict}</td></tr>")
    off = " off the object (object masks given)" if a.objects is not None else ""
    text = ("<p>Per method and predicted class: the 3x3 region holding most relevance above each "
            "map's median"
            f"{off} in most images; flagged when it is not the centre, it is the top region of "
            "at least 75% of the images and holds at least 30% of their relevance on average.</p>")
    head = ("<tr><th>method</th><th>predicted class</th><th>images</th><th>region</th>"
            "<th>consistency</th><th>concentration</th><th>flag</th></tr>")
    figs = []
    for name in a.methods:
        maps = np.stack([r.map for r in a.results[name]])
        for k in sorted(set(a.predicted.tolist())):
            sel = a.predicted == k
            mean_pixels = a.pixels[sel].mean(axis=0)
            pic = overlay(mean_pixels, mean_map(maps[sel]), "jet", scale=2)
            figs.append(_fig(img(pic, f"mean {name} {a.model.spec.labels[k]}"),
                             f"{name}: mean map, {a.model.spec.labels[k]} ({int(sel.sum())})"))
    return text + f"<table>{head}{''.join(rows)}</table>" + "".join(figs)


def _metrics(a: Audit) -> str:
    head = "<tr><th>method</th><th>deletion AUC (lower is better)</th><th>insertion AUC (higher)</th>"
    head += "<th>pointing game</th><th>relevance mass in object</th></tr>" if a.objects is not None else "</tr>"
    rows = []
    for name in a.methods:
        ms = [r.metrics for r in a.results[name]]
        cells = [np.mean([m["deletion_auc"] for m in ms]), np.mean([m["insertion_auc"] for m in ms])]
        if a.objects is not None:  # the pointing game is undefined (None) on an empty mask or a constant map
            hits = [m["pointing_game"] for m in ms if m.get("pointing_game") is not None]
            cells += [np.mean(hits) if hits else np.nan, np.mean([m["relevance_mass"] for m in ms])]
        rows.append(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{v:.3f}</td>" for v in cells) + "</tr>")
    return f"<p>Means over {len(a.paths)} images (target: the predicted class).</p><table>{head}{''.join(rows)}</table>"


def _tsne(a: Audit, out: Path, layer: str, seed: int) -> tuple[str, dict[Path, bytes]]:
    if len(a.paths) < 4:
        return "<p>t-SNE needs at least 4 images.</p>", {}
    name = resolve_layer(a.model, layer)
    feats = a.model.activations(a.x, [name])[name]
    coords, perplexity = tsne(feats.reshape(len(feats), -1), seed=seed)
    labels = a.model.spec.labels
    predicted = [labels[int(k)] for k in a.predicted]
    figs = _fig(img(tsne_png(coords, predicted, title="by predicted class"), "t-SNE predicted"),
                "coloured by predicted class")
    if all(t is not None for t in a.truth):
        figs += _fig(img(tsne_png(coords, [str(t) for t in a.truth], title="by true class"),
                         "t-SNE true"), "coloured by true class")
    write_tsne_csv(out / "tsne.csv", a.paths, a.truth, predicted, coords)
    text = (f"<p>Layer <code>{html.escape(name)}</code>, {feats[0].size} features per image, "
            f"perplexity {perplexity:.3g}, exaggeration 4, learning rate 500; coordinates in "
            "<a href=\"tsne.csv\">tsne.csv</a>.</p>")
    return text + figs, {}


def _extremes(a: Audit, top_k: int) -> str:
    labels = a.model.spec.labels
    classes = sorted(set(a.predicted.tolist()))[:10]
    rows, titles, caps = [], [], []
    k = min(top_k, len(a.paths))
    for c in classes:
        high, low = extremes(a.probs[:, c], k)
        for kind, idx in (("max", high), ("min", low)):
            rows.append([a.pixels[i] for i in idx])
            titles.append(f"{kind} {labels[c]}")
            caps.append([f"{a.paths[i].name[:18]} {a.probs[i, c]:.2f}" for i in idx])
    return ("<p>Per predicted class: the images with the highest and lowest probability of it.</p>"
            + img(grid_png(rows, titles, caps), "maximal and minimal activating images"))


def _per_image(a: Audit) -> str:
    """One collapsed section per true class (per predicted class without true classes)."""
    labels = a.model.spec.labels
    head = "<tr><th>image</th><th>true</th><th>predicted</th>" + "".join(
        f"<th>{html.escape(m)}</th>" for m in a.methods) + "</tr>"
    groups: dict[str, list[str]] = {}
    for i, p in enumerate(a.paths):
        k = int(a.predicted[i])
        cells = [f"<td>{_fig(img(np.kron(a.pixels[i], np.ones((2, 2, 1), np.uint8)), p.name), p.name)}</td>",
                 f"<td>{html.escape(a.truth[i] or '-')}</td>",
                 f"<td>{html.escape(labels[k])} ({a.probs[i, k]:.2f})</td>"]
        for m in a.methods:
            r = a.results[m][i]
            stats = " ".join(f"{key.split('_')[0]} {float(v):.2f}" for key, v in r.metrics.items() if v is not None)
            pic = overlay(a.pixels[i], r.map, r.display, method=m)
            cells.append(f"<td>{_fig(img(pic, m + ' ' + p.name), stats)}</td>")
        key = a.truth[i] if a.truth[i] is not None else f"predicted {labels[k]}"
        groups.setdefault(key, []).append(f"<tr>{''.join(cells)}</tr>")
    parts = [f"<details><summary>{html.escape(key)}: {len(rows)} images</summary>"
             f"<table>{head}{''.join(rows)}</table></details>" for key, rows in groups.items()]
    return ("<p>Click a class to open its images; each overlay's colour bar gives the map's range "
            "(occlusion: drop in probability).</p>" + "".join(parts))


def write_report(a: Audit, out: Path, *, layer: str = "auto", top_k: int = 4, seed: int = 0,
                 sanity: dict[str, Any] | None = None) -> Path:
    """Write ``out/index.html`` (and ``tsne.csv``, ``results.json``); returns the HTML path."""
    spec = a.model.spec
    confusion, acc = _confusion(a)
    try:
        tsne_html, _ = _tsne(a, out, layer, seed)
    except InputError as e:
        tsne_html = f"<p>t-SNE not available: {html.escape(str(e))}</p>"
    lines = headlines(a.findings, a.methods, objects=a.objects is not None)
    verdict = "".join(f"<p class=\"{'flag' if line.startswith('The model') else 'ok'}\">{html.escape(line)}</p>"
                      for line in lines)
    body = [f"<h1>Audit of {html.escape(Path(spec.source).name)}</h1>",
            f"<div class=\"verdict\"><h2>Verdict</h2>{verdict}"
            f"<p>Accuracy: {'-' if acc is None else f'{acc:.1%}'}.</p></div>",
            f"<p>{len(a.paths)} images; methods: {html.escape(', '.join(a.methods))}; "
            f"model sha256 {spec.sha256[:16]}.</p>",
            "<h2>Accuracy and confusion matrix</h2>", confusion,
            "<h2>Spurious-region finding</h2>", _findings(a),
            "<h2>Explanation metrics</h2>", _metrics(a),
            "<h2>Sanity checks</h2>", sanity_section(sanity),
            "<h2>t-SNE of activations</h2>", tsne_html,
            "<h2>Maximal and minimal activating images</h2>", _extremes(a, top_k),
            "<h2>Per-image explanations</h2>", _per_image(a)]
    page = (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>explainer audit</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    results = {"accuracy": acc, "headlines": lines, "findings": [f.__dict__ for f in a.findings],
               "images": [_image_json(a, i) for i in range(len(a.paths))], "sanity": sanity}
    index = out / "index.html"
    atomic_write_all({index: page.encode(),
                      out / "results.json": json.dumps(results, indent=1, allow_nan=False).encode()})
    return index


def _image_json(a: Audit, i: int) -> dict[str, Any]:
    k = int(a.predicted[i])
    return {"image": str(a.paths[i]), "true": a.truth[i], "predicted": a.model.spec.labels[k],
            "probability": float(a.probs[i, k]),
            "metrics": {m: a.results[m][i].metrics for m in a.methods}}
