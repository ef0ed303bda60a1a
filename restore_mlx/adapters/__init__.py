"""Per-architecture adapters: the only code that knows mlx-vlm's internals.

Each adapter is one module that fulfils ``contract.Adapter`` and is listed once in
``FAMILIES``; ``ADAPTERS`` maps every mlx-vlm model type it serves (its ``NAMES``) to
it. Shared patching helpers live in ``patching``. Tested against mlx-vlm 0.7.10.
"""

from ..errors import UnsupportedArchitecture
from . import (
    gemma3,
    idefics3,
    internvl,
    internvl_hf,
    lfm2_vl,
    llava,
    llava_onevision,
    qwen,
    qwen3_5,
    qwen3_vl,
)
from .contract import Adapter

FAMILIES = (
    llava, qwen, qwen3_vl, qwen3_5, gemma3, idefics3, lfm2_vl, llava_onevision,
    internvl, internvl_hf,
)  # fmt: skip
ADAPTERS = {name: family for family in FAMILIES for name in family.NAMES}
SUPPORTED = tuple(ADAPTERS)


def model_type(model) -> str:
    """The mlx-vlm model type of a loaded model ('' when it has none)."""
    config = getattr(model, "config", None)
    return getattr(config, "model_type", "") or ""


def adapter_for(model) -> Adapter:
    """The adapter for ``model``; UnsupportedArchitecture naming the supported ones."""
    name = model_type(model)
    if name not in ADAPTERS:
        raise UnsupportedArchitecture(
            f"architecture {name or type(model).__name__!r} is not supported by restore_mlx; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    return ADAPTERS[name]
