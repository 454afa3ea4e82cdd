"""The audit's plain-language verdict: one headline per finding, as a person would say it."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from .findings import Finding

PLACES = {"upper-left": "upper-left corner", "top": "top edge", "upper-right": "upper-right corner",
          "left": "left edge", "centre": "centre", "right": "right edge",
          "lower-left": "lower-left corner", "bottom": "bottom edge", "lower-right": "lower-right corner"}


def headlines(findings: Sequence[Finding], methods: Sequence[str], *, objects: bool) -> list[str]:
    """One sentence per flagged class (methods flagging the same region are merged), or one
    sentence saying nothing was found.

    Example: "The model decides circle from the lower-left corner, not from the object:
    14 of 16 circle images, 3 methods agree (occlusion, rise, lime)."

    Parameters
    ----------
    findings : the spurious-region findings, per (method, predicted class)
    methods : the audited methods
    objects : whether object masks were given (then "not from the object"; else "off the
        centre", which is all the maps alone can say)
    """
    groups: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for f in findings:
        if f.flagged:
            groups[(f.label, f.region)].append(f)
    lines = []
    for (label, region), fs in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        best = max(fs, key=lambda f: (f.consistency, f.images))
        hits = round(best.consistency * best.images)
        agree = (f"{len(fs)} methods agree ({', '.join(f.method for f in fs)})" if len(fs) > 1
                 else f"found by {fs[0].method}" + (f" only, of {len(methods)} methods" if len(methods) > 1 else ""))
        where = "not from the object" if objects else "off the centre of the image"
        lines.append(f"The model decides {label} from the {PLACES.get(region, region)}, {where}: "
                     f"{hits} of {best.images} {label} images, {agree}.")
    if not lines:
        lines.append(f"No shortcut found: for no predicted class does the relevance of "
                     f"{', '.join(methods)} sit in one off-centre region"
                     f"{' off the object' if objects else ''}.")
    return lines


def verdict_text(lines: Sequence[str], accuracy: float | None, images: int, report: str) -> str:
    """What ``explainer audit`` prints: accuracy, the headlines, where the report is."""
    acc = f"accuracy {accuracy:.1%} on {images} images" if accuracy is not None else f"{images} images (no true classes)"
    return "\n".join([f"audit: {acc}", *[f"- {line}" for line in lines], f"report: {report}"])
