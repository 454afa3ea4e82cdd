"""ONNX graph inspection and surgery."""

RELU_RULES = ("standard", "guided", "deconv")
"""Backward rules of ReLU layers the gradient builder (``gradients``) knows; here so that a
command-line parser lists them without importing the builder."""
