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
