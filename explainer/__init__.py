"""explainer: explain the decisions of deployed image classifiers (ONNX, Triton)."""

import os as _os

# ONNX Runtime's telemetry writes ~/.cache/Microsoft/DeveloperTools/.onnxruntime/ and $TMPDIR/.ses
# when it is imported; off unless the user set ORT_DISABLE_TELEMETRY (docs/security.md).
_os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

from .api import classify, default_model_path, load_model, model_from_description
from .backends.function import from_function
from .errors import InputError, ModelError, ServerError
from .explanation import Explanation
from .imaging import Preprocessing, preprocess, read_image
from .paths import package_version
from .methods.occlusion import occlusion_sensitivity
from .methods.lime import lime as image_lime
from .methods.rise import rise
from .methods.prediction_difference import prediction_difference

__all__ = ["classify", "default_model_path", "load_model", "InputError", "Explanation",
           "Preprocessing", "preprocess", "read_image", "occlusion_sensitivity", "ModelError", "ServerError"]
__all__ += ["image_lime", "rise"]
__all__ += ["prediction_difference"]
from .methods.gradient_maps import deconvnet, gradient, guided_backprop
from .methods.integrated_gradients import integrated_gradients
from .methods.grad_cam import cam, grad_cam
from .methods.deep_dream import deep_dream
__all__ += ["gradient", "guided_backprop", "deconvnet", "integrated_gradients", "grad_cam", "cam", "deep_dream"]
__all__ += ["from_function", "model_from_description"]
__version__ = package_version()
