"""Real-shape model configs for the speed/memory benchmark (random weights).

Every number below is the published ``config.json`` value of the named checkpoint;
only what mlx-vlm's model classes read is written out. The image settings give the
visual-token count that checkpoint produces for one image at that resolution.

- ``qwen2-vl-2b``: Qwen/Qwen2-VL-2B-Instruct (675M ViT + Qwen2-1.5B LM, M-RoPE).
  A 448 x 448 image is 32 x 32 patches of 14 px, merged 2 x 2: 256 visual tokens.
- ``llava-ov-0.5b``: llava-hf/llava-onevision-qwen2-0.5b-ov-hf through mlx-vlm's
  ``llava_onevision`` classes, as users prompt it: SigLIP-so400m/14 tower (384 px
  crops, 27 x 27 = 729 tokens each, last layer, no [CLS]), 2-layer GELU projector,
  Qwen2-0.5B LM, AnyRes tiling on 384 px pinpoints up to 6 x 6 with ``anyres_max_9``.
  The default 768 x 768 image is a base crop + 2 x 2 tiles: 729 + 54 x 54 tile tokens
  + 54 row newlines = 3,699 visual tokens (``--image-size`` sets the square side).
- ``tiny-llava`` / ``tiny-qwen2-vl``: toy sizes for the smoke test, not real shapes.
"""

import copy

QWEN2_VL_2B = {
    "model_type": "qwen2_vl",
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
    "vocab_size": 151936,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_config": {
        "model_type": "qwen2_vl",
        "depth": 32,
        "embed_dim": 1280,
        "hidden_size": 1536,
        "mlp_ratio": 4,
        "num_heads": 16,
        "in_channels": 3,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
}

PINPOINTS = [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)]
LLAVA_OV_05B = {
    "model_type": "llava_onevision",
    "image_token_index": 151646,
    "video_token_index": 151647,
    "image_grid_pinpoints": PINPOINTS,
    "vision_aspect_ratio": "anyres_max_9",
    "vision_feature_layer": -1,
    "vision_feature_select_strategy": "full",
    "use_image_newline_parameter": True,
    "vocab_size": 152000,
    "eos_token_id": [151645],
    "text_config": {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "vocab_size": 152000,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 26,
        "num_attention_heads": 16,
        "image_size": 384,
        "patch_size": 14,
        "layer_norm_eps": 1e-6,
    },
}

TINY_LLAVA = {
    "model_type": "llava",
    "image_token_index": 250,
    "vision_feature_layer": -2,
    "vision_feature_select_strategy": "default",
    "vocab_size": 256,
    "eos_token_id": [2],
    "text_config": {
        "model_type": "llama",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6,
        "vocab_size": 256,
    },
    "vision_config": {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 64,
        "patch_size": 8,
    },
}

TINY_QWEN2_VL = {
    **{k: v for k, v in QWEN2_VL_2B.items() if k != "vision_config"},
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    "vision_config": {
        **QWEN2_VL_2B["vision_config"],
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": 64,
        "num_heads": 2,
    },
}

# name -> (config, image side in pixels, what it is)
BUILTIN = {
    "qwen2-vl-2b": (QWEN2_VL_2B, 448, "Qwen2-VL-2B-Instruct shape, 448 px"),
    "llava-ov-0.5b": (
        LLAVA_OV_05B,
        768,
        "LLaVA-OneVision-0.5B shape (SigLIP-so400m + Qwen2-0.5B), AnyRes, 768 px",
    ),
    "tiny-llava": (TINY_LLAVA, 64, "toy llava (smoke test only)"),
    "tiny-qwen2-vl": (TINY_QWEN2_VL, 112, "toy qwen2_vl (smoke test only)"),
}
DEFAULT_MODELS = ("llava-ov-0.5b", "qwen2-vl-2b")


def get_config(name: str) -> tuple:
    """``(config dict, image side, description)`` of a built-in config; a copy."""
    if name not in BUILTIN:
        raise ValueError(f"unknown built-in config {name!r}; known: {sorted(BUILTIN)}")
    config, side, about = BUILTIN[name]
    return copy.deepcopy(config), side, about
