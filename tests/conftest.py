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


@pytest.fixture(scope="module", autouse=True)
def triton_environment(request):
    """Modules that start a local Triton server first set up its environment: the explicit,
    announced step (explainer.triton_server.ensure_venv); starting a server never installs."""
    if request.module.__name__.split(".")[-1].startswith("test_triton"):
        from explainer.triton_server import ensure_venv

        ensure_venv()
