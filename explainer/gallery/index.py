"""The gallery's index.md: every figure under the seed page it mirrors, with its caption."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Sequence


def index_markdown(figures: Sequence[Any], took: dict[str, float], total: float, settings: Any) -> str:
    """Markdown for ``index.md`` (figures grouped by page, in order; timings at the end)."""
    lines = ["# Gallery", "",
             "The seed pages' figures, regenerated from the bundled models by one command:", "",
             "```sh", "python -m explainer.gallery docs/gallery", "```", "",
             "Every picture follows the display rules of the README (\"How maps are drawn\"): heat maps "
             "in jet at alpha 0.5, signed maps diverging around 0 with alpha proportional to |value|, "
             "pixel attributions clipped at the 99th percentile over a grey photo; colour bars say "
             "the unit; the dashed box is the model's centre crop of the whole picture.", ""]
    page = None
    for fig in figures:
        if fig.page != page:
            page = fig.page
            lines += [f"## {page}", ""]
        lines += [f"### {fig.name}", "", f"![{fig.name}]({fig.name}.png)", "", fig.caption, ""]
    lines += ["## How long it took", "",
              f"{total:.0f} s for the whole gallery"
              f"{' (small settings: a test run, not the published pictures)' if settings.small else ''}.", "",
              "| figure | seconds |", "|---|---|"]
    lines += [f"| {name} | {s:.1f} |" for name, s in took.items()]
    lines += ["", "Settings: " + ", ".join(f"{k} {v}" for k, v in asdict(settings).items()), ""]
    return "\n".join(lines)
