"""One module per explanation method, each a thin layer over the shared engine."""
