"""ONNX graph inspection and surgery."""
