"""Benchmarks of the stages (``ofi bench signals``, ``broker``, ``lateness``)."""
