"""Everything Triton: the TritonModel backend, its companion models, repositories and a local server."""
