"""Qwen shapes: Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5 (M-RoPE), and a toy Qwen2-VL.

- ``qwen2-vl-2b``: Qwen/Qwen2-VL-2B-Instruct (675M ViT + Qwen2-1.5B LM, M-RoPE).
  A 448 x 448 image is 32 x 32 patches of 14 px, merged 2 x 2: 256 visual tokens.
- ``qwen2.5-vl-3b``: Qwen/Qwen2.5-VL-3B-Instruct (32-block ViT, windowed attention
  with full attention at blocks 7, 15, 23, 31, SwiGLU MLP; Qwen2.5-3B-shaped LM, 36
  layers, M-RoPE). 256 visual tokens at 448 px as Qwen2-VL. From the published
  config.json (as quoted verbatim in public repositories' tests).
- ``qwen3-vl-2b``: Qwen/Qwen3-VL-2B-Instruct (24-block ViT with deepstack taps at
  blocks 5, 11, 17 + a Qwen3-1.7B-shaped LM, 28 layers, interleaved M-RoPE). A
  448 x 448 image is 28 x 28 patches of 16 px, merged 2 x 2: 196 visual tokens.
- ``qwen3.5-0.8b``: Qwen/Qwen3.5-0.8B, the smallest Qwen3.5 vision-language model
  (12-block ViT, no deepstack; hybrid LM of 24 layers, softmax attention on every
  4th: 6 layers, partial rotary 0.25). 196 visual tokens at 448 px as above.
  Both from the published config.json values (as quoted verbatim in public
  repositories' tests); both fit 24 GB in fp32 at full depth.
- ``tiny-qwen2-vl``: toy sizes for the smoke test, not a real shape.
"""

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

QWEN2_5_VL_3B = {
    **{k: v for k, v in QWEN2_VL_2B.items() if k != "vision_config"},
    "model_type": "qwen2_5_vl",
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128000,
    "vision_config": {
        "model_type": "qwen2_5_vl",
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 2048,
        "patch_size": 14,
        "spatial_patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
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
