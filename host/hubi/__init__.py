"""hubi host tools: KMC, token, merchant, bank node, consortium, audit and benchmarks."""

__version__ = "0.1.0"
