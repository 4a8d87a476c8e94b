"""Benchmarks behind ``vecnn bench`` and the scripts in ``benchmarks/``.

Optional contenders (PyTorch, scikit-learn) are imported only inside the functions that run
them; a missing one is reported as skipped, never a crash.
"""
