"""``python -m bench.peers`` (``make bench-peers``): Digits against MLServer and Triton, serving the same fitted
model, driven by one Open Inference client. See ``bench/peers/__main__.py`` and docs/performance.md, "Against peers".

The package spans three venvs: ``__main__`` runs in Digits' own (it fits the model and starts the stack), ``client``,
``runtime`` and ``serve`` in .venv-peers (and ``serve`` in .venv-peers-triton for Triton), ``table`` in any.
"""
