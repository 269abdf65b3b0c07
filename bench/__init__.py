"""``python -m bench`` (``make bench``, ``digits bench``): how fast Digits answers, measured end to end.

One run trains or reuses the production model, measures scikit-learn's ``predict`` and the fast path in-process,
then inference directly, the gateway over gRPC and the gateway's HTTP predict on a real local stack, at several
concurrencies; it prints a table, checks the performance targets and writes JSON and a plot under
``bench/results/``. See docs/performance.md.
"""
