"""The pure mlx.core part of restore_mlx: reducers, anchor merging, positions, calibration.

Nothing under this package imports mlx-vlm.
"""
