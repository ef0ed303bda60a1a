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
- ``qwen3-vl-2b``: Qwen/Qwen3-VL-2B-Instruct (24-block ViT with deepstack taps at
  blocks 5, 11, 17 + a Qwen3-1.7B-shaped LM, 28 layers, interleaved M-RoPE). A
  448 x 448 image is 28 x 28 patches of 16 px, merged 2 x 2: 196 visual tokens.
- ``qwen3.5-0.8b``: Qwen/Qwen3.5-0.8B, the smallest Qwen3.5 vision-language model
  (12-block ViT, no deepstack; hybrid LM of 24 layers, softmax attention on every
  4th: 6 layers, partial rotary 0.25). 196 visual tokens at 448 px as above.
  Both from the published config.json values (as quoted verbatim in public
  repositories' tests); both fit 24 GB in fp32 at full depth.
- ``gemma3-4b``: google/gemma-3-4b-it (SigLIP-so400m/14 at 896 px, 4096 patches
  pooled 4 x 4 into 256 image tokens; Gemma 3 LM, 34 layers, 5 sliding (1024 tokens,
  RoPE base 1e4) to 1 global (base 1e6, linear RoPE scaling 8)). 17 GB of fp32
  weights; ``gemma3-4b-6l`` keeps every published width with 6 LM layers (one 5:1
  period) and 4 vision layers, for machines that cannot hold or run the full depth.
- ``smolvlm-256m``: HuggingFaceTB/SmolVLM-256M-Instruct (idefics3: SigLIP-B/16 at
  512 px, pixel shuffle 4, SmolLM2-135M LM). One image as 1 x 2 tiles + the global
  image: 3 views of 512 px, 64 tokens each, 192 visual tokens in three runs.
- ``lfm2-vl-450m``: LiquidAI/LFM2-VL-450M (SigLIP2 NaFlex base/16, pixel unshuffle 2,
  LFM2-350M hybrid LM: attention in 6 of 16 layers). One image as 1 x 2 tiles of
  512 px + a 512 px thumbnail: 3 views of 256 tokens, 768 visual tokens.
- ``internvl3-1b``: OpenGVLab/InternVL3-1B through mlx-vlm's ``internvl_chat`` classes
  (InternViT-300M-448px-V2_5: 24 layers x 1024, 448 px tiles of 14 px patches,
  pixel shuffle 0.5: 256 tokens per tile; 2-layer GELU MLP; Qwen2.5-0.5B-shaped LM,
  24 layers, q/k/v bias). Values from the published config.json as printed by
  ``AutoModel.from_pretrained("OpenGVLab/InternVL3-1B").config``. A square picture of
  ``--image-size`` px is cut as the processor cuts it: 448 px is one tile (256 visual
  tokens), 896 px is 2 x 2 tiles + the thumbnail (1,280 visual tokens, five segments).
  mlx-vlm builds the LM with plain RoPE: the published ``rope_scaling`` (dynamic, 2.0)
  is not applied there, so it is left out here too.
- ``tiny-llava`` / ``tiny-qwen2-vl`` / ``tiny-gemma3``: toy sizes for the smoke test,
  not real shapes.

Tiled configs carry ``bench_views``: the (h, w) patch grid of every view the synthetic
request holds (not a model setting; removed before the model is built).
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

GEMMA3_4B = {
    "model_type": "gemma3",
    "boi_token_index": 255999,
    "eoi_token_index": 256000,
    "image_token_index": 262144,
    "mm_tokens_per_image": 256,
    "eos_token_id": [1, 106],
    "text_config": {
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "intermediate_size": 10240,
        "num_hidden_layers": 34,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "query_pre_attn_scalar": 256,
        "sliding_window": 1024,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "vocab_size": 262208,
        "mm_tokens_per_image": 256,
    },
    "vision_config": {
        "model_type": "siglip_vision_model",
        "hidden_size": 1152,
        "intermediate_size": 4304,
        "num_hidden_layers": 27,
        "num_attention_heads": 16,
        "image_size": 896,
        "patch_size": 14,
    },
}


def _shallow(config, text_layers, vision_layers):
    out = copy.deepcopy(config)
    out["text_config"]["num_hidden_layers"] = text_layers
    out["vision_config"]["num_hidden_layers"] = vision_layers
    return out


GEMMA3_4B_6L = _shallow(GEMMA3_4B, 6, 4)

TINY_GEMMA3 = _shallow(GEMMA3_4B, 6, 2)
TINY_GEMMA3["text_config"].update(
    hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
    head_dim=16, query_pre_attn_scalar=16, sliding_window=32, vocab_size=1024,
    mm_tokens_per_image=16,
)  # fmt: skip
TINY_GEMMA3["vision_config"].update(
    hidden_size=32, intermediate_size=64, num_attention_heads=2, image_size=64,
    patch_size=8,
)  # fmt: skip
TINY_GEMMA3.update(
    boi_token_index=1000, eoi_token_index=1001, image_token_index=1002,
    mm_tokens_per_image=16,
)  # fmt: skip
SMOLVLM_256M = {
    "model_type": "idefics3",
    "image_token_id": 49190,
    "scale_factor": 4,
    "vocab_size": 49280,
    "text_config": {
        "model_type": "llama",
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "num_hidden_layers": 30,
        "rms_norm_eps": 1e-5,
        "rope_theta": 100000.0,
        "max_position_embeddings": 8192,
        "vocab_size": 49280,
    },
    "vision_config": {
        "model_type": "idefics3_vision",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "image_size": 512,
        "patch_size": 16,
    },
    "bench_views": [(32, 32)] * 3,
}

_LFM2_350M_LAYERS = [
    "full_attention" if i in (2, 5, 8, 10, 12, 14) else "conv" for i in range(16)
]
LFM2_VL_450M = {
    "model_type": "lfm2-vl",
    "image_token_index": 396,
    "downsample_factor": 2,
    "projector_hidden_size": 2560,
    "projector_bias": True,
    "projector_use_layernorm": True,
    "vision_feature_layer": -1,
    "text_config": {
        "model_type": "lfm2",
        "hidden_size": 1024,
        "num_hidden_layers": 16,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "vocab_size": 65536,
        "block_dim": 1024,
        "block_ff_dim": 6656,
        "block_multiple_of": 256,
        "block_auto_adjust_ff_dim": True,
        "block_ffn_dim_multiplier": 1.0,
        "conv_L_cache": 3,
        "norm_eps": 1e-5,
        "rope_theta": 1000000.0,
        "layer_types": _LFM2_350M_LAYERS,
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "model_type": "siglip2_vision_model",
        "hidden_size": 768,
        "intermediate_size": 3072,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "num_patches": 256,
        "patch_size": 16,
    },
    "bench_views": [(32, 32)] * 3,
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

_QWEN3_TOKENS = {
    "image_token_id": 151655, "video_token_id": 151656,
    "vision_start_token_id": 151652, "vision_end_token_id": 151653,
}  # fmt: skip

QWEN3_VL_2B = {
    "model_type": "qwen3_vl",
    "tie_word_embeddings": True,
    **_QWEN3_TOKENS,
    "text_config": {
        "model_type": "qwen3_vl_text", "hidden_size": 2048, "intermediate_size": 6144,
        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
        "head_dim": 128, "rms_norm_eps": 1e-6, "rope_theta": 5000000.0,
        "max_position_embeddings": 262144, "tie_word_embeddings": True,
        "vocab_size": 151936, "hidden_act": "silu", "attention_bias": False,
        "rope_scaling": {"rope_type": "default", "mrope_interleaved": True,
                         "mrope_section": [24, 20, 20]},
    },
    "vision_config": {
        "model_type": "qwen3_vl", "depth": 24, "hidden_size": 1024,
        "intermediate_size": 4096, "num_heads": 16, "in_channels": 3,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "out_hidden_size": 2048, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [5, 11, 17], "hidden_act": "gelu_pytorch_tanh",
    },
}  # fmt: skip

QWEN3_5_08B = {
    "model_type": "qwen3_5",
    "tie_word_embeddings": True,
    "image_token_id": 248056, "video_token_id": 248057,
    "vision_start_token_id": 248053, "vision_end_token_id": 248054,
    "text_config": {
        "model_type": "qwen3_5_text", "hidden_size": 1024, "intermediate_size": 3584,
        "num_hidden_layers": 24, "num_attention_heads": 8, "num_key_value_heads": 2,
        "head_dim": 256, "rms_norm_eps": 1e-6, "max_position_embeddings": 262144,
        "vocab_size": 248320, "tie_word_embeddings": True, "attention_bias": False,
        "full_attention_interval": 4, "linear_conv_kernel_dim": 4,
        "linear_key_head_dim": 128, "linear_value_head_dim": 128,
        "linear_num_key_heads": 16, "linear_num_value_heads": 16,
        "rope_parameters": {"rope_type": "default", "mrope_interleaved": True,
                            "mrope_section": [11, 11, 10], "rope_theta": 10000000.0,
                            "partial_rotary_factor": 0.25},
    },
    "vision_config": {
        "model_type": "qwen3_5", "depth": 12, "hidden_size": 768,
        "intermediate_size": 3072, "num_heads": 12, "in_channels": 3,
        "patch_size": 16, "spatial_merge_size": 2, "temporal_patch_size": 2,
        "out_hidden_size": 1024, "num_position_embeddings": 2304,
        "deepstack_visual_indexes": [], "hidden_act": "gelu_pytorch_tanh",
    },
}  # fmt: skip

INTERNVL3_1B = {
    "model_type": "internvl_chat",
    "downsample_ratio": 0.5,
    "force_image_size": 448,
    "max_dynamic_patch": 12,
    "min_dynamic_patch": 1,
    "use_thumbnail": True,
    "image_token_index": 151667,  # <IMG_CONTEXT>; <img> 151665, </img> 151666
    "tie_word_embeddings": False,
    "text_config": {
        "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0,
        "max_position_embeddings": 32768, "vocab_size": 151674,
        "tie_word_embeddings": False, "hidden_act": "silu",
    },
    "vision_config": {
        "model_type": "intern_vit_6b", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 448,
        "patch_size": 14, "layer_norm_eps": 1e-6, "norm_type": "layer_norm",
        "qkv_bias": True, "qk_normalization": False, "drop_path_rate": 0.1,
    },
}  # fmt: skip

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
