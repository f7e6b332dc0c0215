"""Fusion layer: projection, aggregation, occupancy and label consistency (kernels in kernels.py)."""
