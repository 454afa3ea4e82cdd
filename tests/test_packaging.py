"""Package data, per-user locations, the runtime check, --version and the record's provenance."""

from __future__ import annotations

import importlib
import json
from dataclasses import asdict
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import explainer
from explainer import paths
from explainer.cli import main
from explainer.errors import InputError
from explainer.imaging import Preprocessing, crop_box, fit_pixels
from explainer.runtime_check import onnxruntime_distributions, runtime_problem
from explainer.backends.triton.server import LocalTritonServer

ROOT = Path(__file__).resolve().parent.parent
COFFEE = ROOT / "models" / "efficientnet_lite0" / "examples" / "coffee.png"


def test_version_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"explainer {metadata.version('explainer')}"
    assert explainer.__version__ == metadata.version("explainer") == paths.package_version()


def test_one_copy_of_the_bundled_model() -> None:
    """The package holds the files; the checkout's models/efficientnet_lite0 is a link to them."""
    shipped = paths.bundled_dir()
    assert shipped == ROOT / "explainer" / "data" / "efficientnet_lite0"
    assert (ROOT / "models" / "efficientnet_lite0").is_symlink()
    for name in ("model.onnx", "labels.txt", "MODEL_CARD.md", "examples/coffee.png"):
        assert (ROOT / "models" / "efficientnet_lite0" / name).samefile(shipped / name)
    assert paths.bundled_model() == shipped / "model.onnx" == explainer.api.BUNDLED_MODEL
    assert [p.stem for p in paths.bundled_examples()] == ["chelsea", "coffee", "rocket"]
    assert (ROOT / "triton_repo" / "efficientnet_lite0" / "1" / "model.onnx").samefile(shipped / "model.onnx")
    card = (shipped / "MODEL_CARD.md").read_text()
    assert "Apache License 2.0" in card and "## Licences" in card
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]


def test_examples_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["examples", "coffee"]) == 0
    assert Path(capsys.readouterr().out.strip()) == paths.bundled_dir() / "examples" / "coffee.png"
    assert main(["examples", "tea"]) == 2
    assert capsys.readouterr().err.strip() == \
        "explainer: error: no bundled example 'tea' (there are: chelsea, coffee, rocket)"


def test_user_state_in_platform_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("EXPLAINER_TRITON_VENV", "EXPLAINER_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert paths.triton_venv_dir() == tmp_path / "data" / "explainer" / "triton-venv"
    assert paths.cache_dir() == tmp_path / "cache" / "explainer"
    from explainer.perturbation.patch_gaussian import default_cache_dir

    assert default_cache_dir() == tmp_path / "cache" / "explainer"
    monkeypatch.setenv("EXPLAINER_TRITON_VENV", str(tmp_path / "v"))
    monkeypatch.setenv("EXPLAINER_CACHE_DIR", str(tmp_path / "c"))
    assert paths.triton_venv_dir() == tmp_path / "v" and paths.cache_dir() == tmp_path / "c"
    assert paths.checkout_root() == ROOT and paths.default_triton_repo() == ROOT / "triton_repo"


def test_starting_a_server_never_installs(tmp_path: Path) -> None:
    """The server's environment is set up only by the explicit step; a missing one is named."""
    server = LocalTritonServer(ROOT / "triton_repo", venv=tmp_path / "missing")
    with pytest.raises(InputError, match=r"not set up .*explainer triton-server --setup"):
        server.start()
    assert not (tmp_path / "missing").exists()


def _dist(site: Path, name: str, version: str, package: str) -> None:
    """A minimal installed distribution (dist-info with METADATA and RECORD) providing ``package``."""
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "RECORD").write_text(f"{package}/__init__.py,,\n{package}/capi/x.so,,\n{info.name}/RECORD,,\n")
    for f in (f"{package}/__init__.py", f"{package}/capi/x.so"):  # the files the RECORD names exist
        (site / f).parent.mkdir(parents=True, exist_ok=True)  # (importlib_metadata skips missing ones)
        (site / f).touch()
    importlib.invalidate_caches()  # importlib.metadata caches a folder's listing by its mtime, whose tick can be coarse


def test_runtime_check_names_a_clash_and_the_fix(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    _dist(site, "onnxruntime-extensions", "0.14.0", "onnxruntime_extensions")  # an add-on, not a runtime
    assert onnxruntime_distributions([str(site)]) == []
    assert runtime_problem([str(site)]) == ("no ONNX Runtime is installed: pip install onnxruntime "
                                            "(or onnxruntime-gpu on a machine with CUDA)")
    _dist(site, "onnxruntime-gpu", "1.22.0", "onnxruntime")
    assert onnxruntime_distributions([str(site)]) == ["onnxruntime-gpu"]
    assert runtime_problem([str(site)]) is None
    _dist(site, "onnxruntime", "1.22.0", "onnxruntime")
    assert onnxruntime_distributions([str(site)]) == ["onnxruntime", "onnxruntime-gpu"]
    problem = runtime_problem([str(site)])
    assert problem.startswith("onnxruntime and onnxruntime-gpu are installed together and shadow each other")
    assert "pip uninstall -y onnxruntime onnxruntime-gpu && pip install onnxruntime-gpu" in problem
    # this test environment itself: exactly one
    assert len(onnxruntime_distributions()) == 1 and runtime_problem() is None


@pytest.mark.parametrize("shape,spec,box", [
    ((400, 600, 3), Preprocessing((224, 224), resize="crop", crop_fraction=0.875), (125, 25, 475, 375)),
    ((600, 400, 3), Preprocessing((224, 224), resize="crop", crop_fraction=0.875), (25, 125, 375, 475)),
    ((300, 300, 3), Preprocessing((100, 100), resize="crop", crop_fraction=1.0), (0, 0, 300, 300)),
    ((300, 500, 3), Preprocessing((100, 100), resize="crop", crop_fraction=0.5),
     (116 * 500 / 333, 75, 216 * 500 / 333, 225)),
    ((123, 457, 3), Preprocessing((224, 224), resize="stretch"), (0, 0, 457, 123)),
])
def test_crop_box_by_hand(shape: tuple, spec: Preprocessing, box: tuple) -> None:
    """400x600 at 224/0.875: shorter side 400 -> 256 (x0.64), 384 wide, centre 224 from x 80, y 16:
    80/0.64 = 125, 16/0.64 = 25, 304/0.64 = 475, 240/0.64 = 375. 300x500 at 100/0.5: 300 -> 200
    (x2/3), 500 -> round(333.3) = 333 wide (x333/500), centre 100 from x 116, y 50."""
    np.testing.assert_allclose(crop_box(shape, spec), box, atol=1e-9)


def test_crop_box_is_what_the_model_sees() -> None:
    """A white square drawn exactly on the crop box fills the fitted pixels; outside is black."""
    pixels = np.zeros((400, 600, 3), np.uint8)
    spec = Preprocessing((224, 224), resize="crop", crop_fraction=0.875)
    left, top, right, bottom = map(int, crop_box(pixels.shape, spec))
    pixels[top:bottom, left:right] = 255
    fitted = fit_pixels(pixels, spec)
    assert fitted[2:-2, 2:-2].min() == 255  # inside, away from the resampling kernel at the edge
    pixels[:] = 0
    pixels[top + 8:bottom - 8, left + 8:right - 8] = 255  # 8 px (5 fitted px) inside the box
    fitted = fit_pixels(pixels, spec)
    assert max(fitted[:2].max(), fitted[-2:].max(), fitted[:, :2].max(), fitted[:, -2:].max()) < 60
    assert fitted[8:-8, 8:-8].min() == 255


def test_every_record_has_provenance(bundled, tmp_path: Path) -> None:
    before = datetime.now(timezone.utc).replace(microsecond=0)
    e = explainer.occlusion_sensitivity(bundled, str(COFFEE), stride=112, mask_size=112)
    e.save(tmp_path, "coffee")
    record = json.loads((tmp_path / "coffee.occlusion.json").read_text())
    assert record["explainer_version"] == metadata.version("explainer")
    assert before <= datetime.fromisoformat(record["timestamp"]) <= datetime.now(timezone.utc)
    assert record["preprocessing"] == json.loads(json.dumps(asdict(bundled.spec.preprocessing)))
    assert record["crop_box"] == [125.0, 25.0, 475.0, 375.0]
    tensor = explainer.occlusion_sensitivity(bundled, e.input, stride=112, mask_size=112)
    assert tensor.to_dict()["crop_box"] is None and tensor.to_dict()["preprocessing"]["size"] == (224, 224)
    dream = explainer.deep_dream(bundled, target=967, num_iterations=1, pyramid_levels=1).to_dict()
    assert json.loads(json.dumps(dream["preprocessing"])) == record["preprocessing"]
    assert dream["crop_box"] is None and datetime.fromisoformat(dream["timestamp"]) >= before
