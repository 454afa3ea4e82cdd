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
    announced step (explainer.backends.triton.server.ensure_venv); starting a server never installs."""
    if request.module.__name__.split(".")[-1].startswith("test_triton"):
        from explainer.backends.triton.server import ensure_venv

        ensure_venv()


SLOW_MODULES = ("test_triton", "test_triton_faults", "test_triton_gradients", "test_triton_layers")
SLOW_TESTS = {"test_report_renders_in_headless_chromium"}


def pytest_collection_modifyitems(config, items):
    """The slow tier: everything that starts a Triton server or a browser (``pytest -m "not slow"``
    leaves them out; the full suite, the README's test command and CI, runs them)."""
    for item in items:
        if item.module.__name__ in SLOW_MODULES or item.originalname in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
