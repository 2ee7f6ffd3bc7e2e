"""The cost model's building blocks: pure formulas of kernel times (``kernels``)."""
