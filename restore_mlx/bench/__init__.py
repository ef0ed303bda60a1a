"""Benchmarks: speed and memory against unpatched mlx-vlm (``python -m restore_mlx.bench``,
``run``), the reducers alone (``python -m restore_mlx.bench.reducers``), the real
published shapes they run on (``shapes``, named in ``configs``) and random-weight
checkpoints in the Hugging Face layout for tests and benchmarks (``checkpoints``,
``qwen_checkpoints``)."""
