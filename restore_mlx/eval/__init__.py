"""Fidelity: the eval harness (``python -m restore_mlx.eval``, ``harness``) and the
spatial probe it runs on (``probe``: scenes, questions, training)."""
