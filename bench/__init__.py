"""IsoKron benchmarks: speed and memory, side by side with what users would pick instead.

Run everything with ``.venv/bin/python -m bench`` (``--quick`` for a smoke run); see
``docs/benchmarks.md``. Benchmarks are not tests: nothing here is imported by ``tests/``.
"""
