"""Ways of running a model: ONNX Runtime in-process (and Triton, later)."""
