"""A normal install works: the wheel, built from the package alone, installed with its
dependencies into a fresh virtual environment outside the checkout, run from an empty folder.

Slow (about two minutes with a warm pip cache; pip's cache is shared with the developer's).
Needs the package index (or the pip cache) for the dependencies; skip with ``-m "not slow"``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_FILES = {"model.onnx", "labels.txt", "MODEL_CARD.md", "examples/coffee.png",
                 "examples/chelsea.png", "examples/rocket.png"}

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 900) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd[:4]} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def _clean_env(tmp: Path) -> dict[str, str]:
    """The user's environment without this checkout's virtualenv or paths; user state in tmp."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "EXPLAINER_MODEL", "EXPLAINER_CACHE_DIR",
                        "EXPLAINER_TRITON_VENV")}
    env.update(XDG_DATA_HOME=str(tmp / "xdg-data"), XDG_CACHE_HOME=str(tmp / "xdg-cache"),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(ROOT)))
    return env


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    """Build the wheel from a copy of what the package is made of (nothing else of the checkout)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "explainer", src / "explainer",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"), str(src)],
         tmp, env)
    (wheel,) = (tmp / "dist").glob("explainer-*.whl")
    return wheel


def _report(pip: Path, requirement: str, cwd: Path, env: dict[str, str]) -> list[str]:
    """Names of every distribution pip would install for ``requirement`` (dry run)."""
    out = _run([str(pip), "install", "-q", "--dry-run", "--ignore-installed", "--report", "-",
                requirement], cwd, env)
    return sorted(i["metadata"]["name"].lower() for i in json.loads(out)["install"])


def test_wheel_installs_and_runs_from_any_directory(tmp_path: Path) -> None:
    env = _clean_env(tmp_path)
    wheel = _build_wheel(tmp_path, env)

    # the wheel: small, the bundled model and its card, the licence, no export script
    assert wheel.stat().st_size < 30 * 2**20
    names = zipfile.ZipFile(wheel).namelist()
    data = "explainer/data/efficientnet_lite0/"
    assert {n[len(data):] for n in names if n.startswith(data)} == BUNDLED_FILES
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Provides-Extra: gpu" in metadata
    runtime = [ln for ln in metadata.splitlines() if ln.startswith("Requires-Dist: onnxruntime")]
    assert runtime and all("extra ==" not in ln and "-gpu" not in ln for ln in runtime), runtime

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    pip, py, exe = venv / "bin" / "pip", venv / "bin" / "python", venv / "bin" / "explainer"

    # resolution of the extras, in the fresh environment (dry runs: nothing downloaded but metadata)
    gpu = _report(pip, f"{wheel}[gpu]", tmp_path, env)
    assert [n for n in gpu if n.startswith("onnxruntime")] == ["onnxruntime"]  # never -gpu beside it
    assert "cupy-cuda12x" in gpu
    triton = _report(pip, f"{wheel}[triton]", tmp_path, env)
    assert [n for n in triton if n.startswith("onnxruntime")] == ["onnxruntime"]
    assert "tritonclient" in triton
    assert not [n for n in triton if n.startswith(("cuda", "nvidia"))]
    # the check can fail: tritonclient's "all" extra does bring CUDA packages
    assert [n for n in _report(pip, "tritonclient[all]", tmp_path, env) if n.startswith(("cuda", "nvidia"))]

    # the plain install (no extra), with every dependency, then use from an empty folder elsewhere
    _run([str(pip), "install", "-q", str(wheel)], tmp_path, env)
    work = tmp_path / "empty"
    work.mkdir()
    assert _run([str(exe), "--version"], work, env).strip() == "explainer 0.1.0"
    found = json.loads(_run([str(py), "-c", (
        "import json, explainer, explainer.paths as p, explainer.runtime_check as r; m = explainer.load_model(); "
        "print(json.dumps([explainer.__file__, str(p.bundled_model()), m.spec.labels[967], "
        "r.onnxruntime_distributions(), str(p.triton_venv_dir()), str(p.default_triton_repo())]))")],
        work, env))
    site = venv / "lib"
    assert all(Path(f).is_relative_to(site) for f in found[:2]), found  # not the checkout's copy
    assert found[2] == "espresso" and found[3] == ["onnxruntime"]
    assert found[4] == str(tmp_path / "xdg-data" / "explainer" / "triton-venv")
    served = Path(found[5]) / "efficientnet_lite0" / "1" / "model.onnx"
    assert served.resolve() == Path(found[1]).resolve()  # a link into the package, nothing copied

    coffee = _run([str(exe), "examples", "coffee"], work, env).strip()
    assert Path(coffee).is_relative_to(site)
    top = json.loads(_run([str(exe), "classify", coffee, "--top", "3", "--json"], work, env))
    assert top[coffee][0]["label"] == "espresso" and top[coffee][0]["probability"] > 0.9

    _run([str(exe), "explain", coffee, "--method", "occlusion", "--stride", "56", "--out", "r", "--quiet"],
         work, env)
    assert sorted(p.name for p in (work / "r").iterdir()) == [
        "coffee.occlusion.json", "coffee.occlusion.npy", "coffee.occlusion.png"]
    record = json.loads((work / "r" / "coffee.occlusion.json").read_text())
    assert record["label"] == "espresso" and record["explainer_version"] == "0.1.0"
    assert record["crop_box"] == [125.0, 25.0, 475.0, 375.0] and record["preprocessing"]["resize"] == "crop"
    heat = np.load(work / "r" / "coffee.occlusion.npy")
    # stride 56 > the 45 px mask: rows and columns between the windows were never occluded (NaN)
    assert heat.shape == (224, 224) and np.nanmax(heat) > 0.1
    assert np.isnan(heat).sum() == record["params"]["uncovered_pixels"] == 224 * 224 - 158 * 158
    assert sorted(p.name for p in work.iterdir()) == ["r"]  # nothing else written in the folder

    # the GPU path (README): swap the CPU runtime for onnxruntime-gpu, never both installed
    _run([str(pip), "uninstall", "-y", "-q", "onnxruntime"], tmp_path, env)
    left = json.loads(_run([str(py), "-c", "import json, explainer.runtime_check as r; "
                            "print(json.dumps(r.onnxruntime_distributions()))"], work, env))
    assert left == []
    swap = _report(pip, "onnxruntime-gpu", tmp_path, env)
    assert [n for n in swap if n.startswith("onnxruntime")] == ["onnxruntime-gpu"]
