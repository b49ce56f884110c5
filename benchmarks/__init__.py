"""Benchmarks, run from the repository root as ``python -m benchmarks.<name>`` (flows2d,
densities, rl, ...); each writes its tables and figures under ``--out`` and prints them."""
