"""Audits and batch explanations on a Dask cluster (``--workers N`` / ``--scheduler ADDRESS``).

``connect`` opens the cluster and runs tasks, ``worker`` is what a worker process runs (the
model rebuilt once per process from ``model.describe()``), ``commands`` wires both into
``explainer explain`` and ``explainer audit``. See docs/cluster.md.
"""
