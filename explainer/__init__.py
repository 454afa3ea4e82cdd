"""explainer: explain the decisions of deployed image classifiers (ONNX, Triton)."""

from .api import classify, default_model_path, load_model
from .errors import InputError
from .explanation import Explanation
from .imaging import Preprocessing, preprocess, read_image
from .methods.occlusion import occlusion_sensitivity

__all__ = ["classify", "default_model_path", "load_model", "InputError", "Explanation",
           "Preprocessing", "preprocess", "read_image", "occlusion_sensitivity"]
__version__ = "0.1.0"
