"""`explainer audit` on the shortcut model: the watermark is found, the run resumes, the HTML renders.

The browser check needs Debian's chromium (`apt-get install -y chromium`); CI installs it.
"""

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import explainer
from explainer.audit.findings import region_masses, spurious_region
from explainer.audit.run import audit
from explainer.cli import main

SHORTCUT = Path(__file__).resolve().parent.parent / "models" / "shortcut"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    model = explainer.load_model(SHORTCUT / "model.onnx")
    result = audit(model, SHORTCUT / "testset", out, masks=SHORTCUT / "masks" / "object", steps=16)
    return model, out, result


def test_audit_flags_the_watermark_class_and_corner(audited):
    _, out, result = audited
    assert [(f["class"], f["region"]) for f in result.flags] == [("circle", "lower-left")]
    assert result.computed == 48 and result.reused == 0
    assert result.accuracy == pytest.approx(0.5)  # 16 swapped watermarks + 8 unmarked circles wrong
    data = json.loads((out / "results.json").read_text())
    assert len(data["images"]) == 48
    assert {"deletion_auc", "insertion_auc", "pointing_game", "relevance_mass"} <= \
        set(data["images"][0]["metrics"]["occlusion"])
    assert len((out / "tsne.csv").read_text().splitlines()) == 49


def test_explanations_point_at_the_watermark(audited):
    # Ground truth for the method: on images called "circle" because of the watermark,
    # occlusion's maximum lies on the watermark (pointing game against its mask).
    from explainer.metrics import pointing_game

    _, out, _ = audited
    data = json.loads((out / "results.json").read_text())
    marked = [i for i, r in enumerate(data["images"]) if r["image"].endswith("_wm.png")]
    cache = sorted((out / "cache").glob("*.occlusion.npy"))
    hits = []
    for i in marked:
        p = Path(data["images"][i]["image"])
        mask = np.asarray(Image.open(SHORTCUT / "masks" / "watermark" / p.parent.name / p.name)) > 0
        hits.append(pointing_game(np.load(cache[i]), mask, tolerance=2))
    assert len(marked) == 24 and np.mean(hits) >= 0.9


def test_resume_redoes_only_missing_images_byte_identical(audited, tmp_path):
    model, out, _ = audited
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "index.html").unlink()
    removed = sorted((copy / "cache").glob("*.npy"))[20:]  # "interrupted" after 20 images
    for f in removed:
        f.unlink()
    again = audit(model, SHORTCUT / "testset", copy, masks=SHORTCUT / "masks" / "object", steps=16)
    assert again.computed == len(removed) == 28 and again.reused == 20
    for name in ("index.html", "results.json", "tsne.csv"):
        assert (copy / name).read_bytes() == (out / name).read_bytes(), name


def test_criterion_by_hand():
    maps = np.zeros((4, 9, 9))
    maps[:, 7, 1] = 1.0  # all in the lower-left cell
    maps[3, 4, 4] = 3.0  # one image mostly central
    f = spurious_region("m", "c", maps)
    assert f.region == "lower-left" and f.consistency == 0.75 and f.concentration == pytest.approx(
        (1 + 1 + 1 + 0.25) / 4) and f.flagged
    objects = np.zeros((4, 9, 9), bool)
    objects[:, 6:, :3] = True  # the lower-left is the object: not spurious
    assert not spurious_region("m", "c", maps, objects).flagged
    masses, valid = region_masses(np.zeros((1, 9, 9)))
    assert not valid[0] and masses.sum() == 0
    assert not spurious_region("m", "c", maps[:2]).flagged  # too few images


def test_cli_audit_errors(tmp_path, capsys):
    assert main(["audit", str(SHORTCUT / "testset"), "--out", str(tmp_path), "--model",
                 str(SHORTCUT / "model.onnx"), "--methods", "nope"]) == 2
    assert "cannot be audited" in capsys.readouterr().err


def _browser(args, tmp):
    env = dict(os.environ, HOME=str(tmp))
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120, env=env)


def _screenshot_ok(pixels: np.ndarray) -> bool:
    """A rendered report, not a blank or broken page: varied colours overall, and the top
    (title and verdict box) holds dark text and the verdict's red frame."""
    top = pixels[:400]
    dark = (top.max(axis=2) < 80).mean()
    red = ((top[..., 0] > 150) & (top[..., 1] < 90) & (top[..., 2] < 90)).mean()
    return bool(pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
                and dark > 0.002 and red > 0.0005)


def test_report_renders_in_headless_chromium(audited):
    if CHROMIUM is None:  # a real browser is part of the test: CI installs it, never skip
        pytest.fail("chromium not found: install it with `apt-get install -y chromium`")
    _, out, result = audited
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        probe = tmp / "probe.html"
        check = ("<script>window.addEventListener('load',()=>{const im=[...document.images];"
                 "const bad=im.filter(i=>!(i.complete&&i.naturalWidth>0)).length;"
                 "const d=[...document.querySelectorAll('details')];"
                 "document.body.setAttribute('data-check',`images=${im.length} broken=${bad} "
                 "height=${document.body.scrollHeight} details=${d.length} open=${d.filter(x=>x.open).length}`);});"
                 "</script></body>")
        probe.write_text((out / "index.html").read_text().replace("</body>", check))
        dom = _browser(["--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], tmp)
        assert 'data-check="images=' in dom.stdout, dom.stderr[-2000:]
        stat = dict(kv.split("=") for kv in dom.stdout.split('data-check="')[1].split('"')[0].split())
        assert stat["broken"] == "0" and int(stat["images"]) >= 48 * 2 + 3, stat
        # per-image sections collapsed (one per true class): the page is a few screens, not 10,000 px
        assert stat["details"] == "3" and stat["open"] == "0" and int(stat["height"]) < 4000, stat
        assert result.headlines[0].startswith("The model decides circle from the lower-left corner, not from the object")
        assert "The model decides circle from the lower-left corner" in dom.stdout
        shot = tmp / "shot.png"
        _browser([f"--screenshot={shot}", "--window-size=1200,1600", "--hide-scrollbars",
                  (out / "index.html").as_uri()], tmp)
        pixels = np.asarray(Image.open(shot).convert("RGB")).astype(float)
        assert pixels.shape[:2] == (1600, 1200) and _screenshot_ok(pixels)
        # the check fails on a blank page and on a page whose images and styles are broken
        for name, page in (("blank", "<html><body></body></html>"),
                           ("broken", "<html><body><h1>Audit</h1><img src='missing.png'>"
                                      "<p>The model decides</p></body></html>")):
            (tmp / f"{name}.html").write_text(page)
            _browser([f"--screenshot={tmp / (name + '.png')}", "--window-size=1200,1600", "--hide-scrollbars",
                      (tmp / f"{name}.html").as_uri()], tmp)
            assert not _screenshot_ok(np.asarray(Image.open(tmp / f"{name}.png").convert("RGB")).astype(float)), name


def test_cli_audit_prints_a_verdict(tmp_path, capsys):
    folder = tmp_path / "few"
    for cls in ("circle", "square"):
        (folder / cls).mkdir(parents=True)
        for p in sorted((SHORTCUT / "testset" / cls).glob("*.png"))[:2]:
            shutil.copy(p, folder / cls / p.name)
    assert main(["audit", str(folder), "--out", str(tmp_path / "out"), "--model", str(SHORTCUT / "model.onnx"),
                 "--quiet", "--steps", "4", "--top-k", "1"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].startswith("audit: accuracy") and "on 4 images" in text[0]
    assert text[1].startswith("- No shortcut found") and text[-1] == f"report: {tmp_path / 'out' / 'index.html'}"


def test_headlines_by_hand():
    from explainer.audit.findings import Finding
    from explainer.audit.verdict import headlines

    fs = [Finding("occlusion", "circle", 16, "lower-left", 14 / 16, 0.6, True),
          Finding("rise", "circle", 16, "lower-left", 12 / 16, 0.5, True),
          Finding("lime", "circle", 16, "centre", 0.5, 0.3, False),
          Finding("occlusion", "square", 8, "top", 0.9, 0.4, True)]
    lines = headlines(fs, ["occlusion", "rise", "lime"], objects=True)
    assert lines == ["The model decides circle from the lower-left corner, not from the object: 14 of 16 circle "
                     "images, 2 methods agree (occlusion, rise).",
                     "The model decides square from the top edge, not from the object: 7 of 8 square images, "
                     "found by occlusion only, of 3 methods."]
    assert "off the centre" in headlines(fs[:1], ["occlusion"], objects=False)[0]
    assert headlines(fs[2:3], ["lime"], objects=False)[0].startswith("No shortcut found")
