"""The spatial probe: small models trained here on generated scenes.

``scenes`` and ``questions`` make the data, ``vocab`` the tokenizer and checkpoint side
files, ``model`` the config and training helpers (``llava``, the shipped probe, or
``qwen2_vl``: see ``qwen``), ``train`` the training CLI
(``python -m restore_mlx.eval.probe.train [--arch qwen2_vl]``), ``warmstart`` teaching a
new probe from a trained one; ``data``, ``metrics`` and ``report`` serve the eval harness
(``python -m restore_mlx.eval``).
"""
