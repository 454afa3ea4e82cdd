"""Where the package's own files and the user's state live.

The bundled model ships inside the package (``explainer/data/efficientnet_lite0``,
read through :mod:`importlib.resources`), so it is found from any directory after a
normal ``pip install``. Per-user state goes to the platform's places
(:mod:`platformdirs`): the local Triton server's environment under the user data
folder, fitted statistics under the user cache folder. Environment variables move
them: ``$EXPLAINER_TRITON_VENV``, ``$EXPLAINER_CACHE_DIR``.
"""

from __future__ import annotations

import os
from importlib import metadata, resources
from pathlib import Path

import platformdirs

APP = "explainer"


def package_version() -> str:
    """The installed distribution's version ("0+unknown" when run from a bare source tree)."""
    try:
        return metadata.version(APP)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def bundled_dir() -> Path:
    """The folder of the bundled EfficientNet-Lite0: model.onnx, labels.txt, MODEL_CARD.md, examples/."""
    return Path(str(resources.files(APP).joinpath("data", "efficientnet_lite0")))


def bundled_model() -> Path:
    """The bundled EfficientNet-Lite0 ONNX file."""
    return bundled_dir() / "model.onnx"


def bundled_examples() -> list[Path]:
    """The bundled example images (PNG), sorted by name."""
    return sorted((bundled_dir() / "examples").glob("*.png"))


def checkout_root() -> Path | None:
    """The source checkout this package runs from (an editable install), else None."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "triton_repo").is_dir() else None


def user_data_dir() -> Path:
    """The platform's per-user data folder for explainer (e.g. ~/.local/share/explainer)."""
    return platformdirs.user_data_path(APP)


def cache_dir() -> Path | None:
    """$EXPLAINER_CACHE_DIR, else the platform's per-user cache folder (e.g. ~/.cache/explainer);
    None when $EXPLAINER_CACHE_DIR is "off" (no cache of explainer's is read or written)."""
    given = os.environ.get("EXPLAINER_CACHE_DIR")
    if given and given.lower() in ("off", "0", "false", "no"):
        return None
    return Path(given) if given else platformdirs.user_cache_path(APP)


def triton_venv_dir() -> Path:
    """The local Triton server's own virtual environment: $EXPLAINER_TRITON_VENV, else
    ``<user data>/triton-venv``."""
    given = os.environ.get("EXPLAINER_TRITON_VENV")
    return Path(given) if given else user_data_dir() / "triton-venv"


def default_triton_repo() -> Path:
    """The model repository ``explainer triton-server`` serves by default.

    In a checkout: its production ``triton_repo/``. Installed: a repository of the
    bundled model written on first use to ``<user data>/triton_repo`` (its
    ``model.onnx`` a symlink into the package, nothing copied).
    """
    root = checkout_root()
    if root is not None:
        return root / "triton_repo"
    repo = user_data_dir() / "triton_repo"
    model = repo / "efficientnet_lite0" / "1" / "model.onnx"
    if not model.exists():  # missing, or a dangling link left by another installation
        from .backends.triton.repo import write_model

        write_model(repo, bundled_model(), "efficientnet_lite0")
    return repo
