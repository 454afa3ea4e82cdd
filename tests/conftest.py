import numpy as np
import pytest

import explainer


@pytest.fixture(scope="session")
def bundled():
    """The bundled EfficientNet-Lite0 model, loaded once."""
    return explainer.load_model()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session", autouse=True)
def graph_cache_dir(tmp_path_factory):
    """Gradient graphs cached in a folder of the test session, never the user's cache."""
    import os

    folder = tmp_path_factory.mktemp("graph-cache", numbered=True)
    folder.chmod(0o700)
    old = os.environ.get("EXPLAINER_GRAPH_CACHE")
    os.environ["EXPLAINER_GRAPH_CACHE"] = str(folder / "graphs")
    yield folder / "graphs"
    if old is None:
        os.environ.pop("EXPLAINER_GRAPH_CACHE", None)
    else:
        os.environ["EXPLAINER_GRAPH_CACHE"] = old


@pytest.fixture(scope="module", autouse=True)
def triton_environment(request):
    """Modules that start a local Triton server first set up its environment: the explicit,
    announced step (explainer.triton_server.ensure_venv); starting a server never installs."""
    if request.module.__name__.split(".")[-1].startswith("test_triton"):
        from explainer.triton_server import ensure_venv

        ensure_venv()
