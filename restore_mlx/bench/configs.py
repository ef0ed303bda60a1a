"""Real-shape model configs for the speed/memory benchmark (random weights): the
registry of built-in names (``BUILTIN``, ``DEFAULT_MODELS``) and ``get_config``. The
shapes themselves, each with the checkpoint it copies, are in
``restore_mlx.bench.shapes``, one module per family.
"""

import copy

from .shapes.gemma3 import GEMMA3_4B, GEMMA3_4B_6L, TINY_GEMMA3
from .shapes.llava import LLAVA_OV_05B, TINY_LLAVA
from .shapes.qwen import (
    QWEN2_5_VL_3B,
    QWEN2_VL_2B,
    QWEN3_5_08B,
    QWEN3_VL_2B,
    TINY_QWEN2_VL,
)
from .shapes.tiled import INTERNVL3_1B, LFM2_VL_450M, SMOLVLM_256M

# name -> (config, image side in pixels, what it is)
BUILTIN = {
    "qwen2-vl-2b": (QWEN2_VL_2B, 448, "Qwen2-VL-2B-Instruct shape, 448 px"),
    "llava-ov-0.5b": (
        LLAVA_OV_05B,
        768,
        "LLaVA-OneVision-0.5B shape (SigLIP-so400m + Qwen2-0.5B), AnyRes, 768 px",
    ),
    "gemma3-4b": (GEMMA3_4B, 896, "Gemma-3-4B-it shape, 896 px"),
    "gemma3-4b-6l": (
        GEMMA3_4B_6L,
        896,
        "Gemma-3-4B-it widths, 6 of 34 LM layers and 4 of 27 vision layers, 896 px",
    ),
    "qwen2.5-vl-3b": (QWEN2_5_VL_3B, 448, "Qwen2.5-VL-3B-Instruct shape, 448 px"),
    "qwen3-vl-2b": (QWEN3_VL_2B, 448, "Qwen3-VL-2B-Instruct shape, 448 px"),
    "qwen3.5-0.8b": (QWEN3_5_08B, 448, "Qwen3.5-0.8B shape (hybrid LM), 448 px"),
    "smolvlm-256m": (
        SMOLVLM_256M,
        512,
        "SmolVLM-256M shape (SigLIP-B/16 + SmolLM2-135M), 1 x 2 tiles + global image",
    ),
    "lfm2-vl-450m": (
        LFM2_VL_450M,
        512,
        "LFM2-VL-450M shape (SigLIP2-B/16 + LFM2-350M), 1 x 2 tiles + thumbnail",
    ),
    "internvl3-1b": (
        INTERNVL3_1B,
        448,
        "InternVL3-1B shape (InternViT-300M + Qwen2.5-0.5B), tiled as the processor "
        "tiles a square picture, 448 px",
    ),
    "tiny-llava": (TINY_LLAVA, 64, "toy llava (smoke test only)"),
    "tiny-gemma3": (TINY_GEMMA3, 64, "toy gemma3 (smoke test only)"),
    "tiny-qwen2-vl": (TINY_QWEN2_VL, 112, "toy qwen2_vl (smoke test only)"),
}
DEFAULT_MODELS = ("llava-ov-0.5b", "qwen2-vl-2b")


def get_config(name: str) -> tuple:
    """``(config dict, image side, description)`` of a built-in config; a copy."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in config {name!r}; known: {sorted(BUILTIN)}")
    config, side, about = BUILTIN[name]
    return copy.deepcopy(config), side, about
