"""Explanations served next to the model: the Triton explainer model and the KServe endpoint."""
