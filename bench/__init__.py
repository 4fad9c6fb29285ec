"""`make bench`: the performance benchmark of issue 6 (see docs/performance.md).

Run it with `.venv/bin/python -m bench.run --help`.
"""
