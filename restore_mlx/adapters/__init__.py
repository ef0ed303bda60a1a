"""Per-architecture adapters: the only code that knows mlx-vlm's internals.

Each adapter module exposes the same functions: ``patch``/``unpatch`` (class swaps),
``encode`` (visual tokens, grid, [CLS] attention), ``cached_image_features`` (them in
the form mlx-vlm's own merge takes), ``image_span``, ``full_positions``,
``layout`` (the reduced prompt and its generate kwargs), ``rope_thetas`` and, for
in-LLM scoring, ``layers``/``run_layer``/``queries_keys``. Tested against mlx-vlm 0.7.10.
"""

from . import llava, qwen

ADAPTERS = {"llava": llava, "qwen2_vl": qwen, "qwen2_5_vl": qwen}
SUPPORTED = tuple(ADAPTERS)


def model_type(model) -> str:
    """The mlx-vlm model type of a loaded model ('' when it has none)."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "") or ""


def adapter_for(model):
    """The adapter module for ``model``; ValueError naming the supported architectures."""
    name = model_type(model)
    if name not in ADAPTERS:
        raise ValueError(
            f"architecture {name or type(model).__name__!r} is not supported by restore_mlx; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    return ADAPTERS[name]
