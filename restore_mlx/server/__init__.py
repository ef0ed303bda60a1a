"""mlx-vlm's OpenAI-compatible server with RESTORE on every image prompt.

    python -m restore_mlx.server --model MODEL [--preset NAME] [mlx_vlm.server flags]

Same endpoints, request schema, flags, streaming, tool calls, thinking and structured
outputs as ``python -m mlx_vlm.server`` (0.7.10): it is that server, imported, with a
few of its functions wrapped (``hooks``, the only module that knows its internals).

- Every image prompt is reduced with the server's recipe: ``--preset``, else the
  model's recorded ``restore_preset`` (``restore-mlx-convert``), else ``mobile-50``.
  A request may choose its own with an extra body field (``recipes``):
  ``extra_body={"restore": {"preset": "extreme-89"}}``,
  ``{"restore": {"method": "divprune", "keep": 0.3}}`` or ``{"restore": {"off": true}}``.
  A bad field is an HTTP 400 naming the problem.
- Responses carry ``usage.restore``: ``visual_tokens_before``, ``visual_tokens_after``,
  ``prompt_tokens_prefilled`` (the reduced prompt) and ``reused_reduction``.
- Continuous batching stays on: each row of mlx-vlm's batch carries its own request's
  positions and bias (``restore_mlx.adapters.batching``).
- Multi-turn: mlx-vlm's automatic prefix cache is on by default here, in memory
  (``APC_ENABLED=0`` turns it off; ``APC_DISK_ENABLED=1`` adds mlx-vlm's disk tier). A
  later turn about the same image reuses the first turn's reduction
  (``recipes.Reductions``): no second pass of the vision tower, and the reduced prefix
  is served from the prefix cache (whose key includes the image and the recipe) in
  whole blocks of ``APC_BLOCK_SIZE`` tokens (16 by default) of the earlier prompt;
  only the rest is prefilled. mlx-vlm itself reuses no prefix that holds image tokens
  on models whose text config names them (Qwen); reduced rows may, since they carry
  their own embeddings, positions and bias (``hooks._apc_pick_for``).
"""
