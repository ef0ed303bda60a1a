"""The spatial probe: a small LLaVA-architecture model trained here on generated scenes.

``scenes`` and ``questions`` make the data, ``vocab`` the tokenizer and checkpoint side
files, ``model`` the config and training helpers, ``train`` the training CLI
(``python -m restore_mlx.eval.probe.train``); ``data``, ``metrics`` and ``report`` serve the
eval harness (``python -m restore_mlx.eval``).
"""
