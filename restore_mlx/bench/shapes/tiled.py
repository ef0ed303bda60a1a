"""Shapes of the families that show one picture as several views (tiles and a global
image or thumbnail): SmolVLM (idefics3), LFM2-VL and InternVL3.

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

SmolVLM and LFM2-VL carry ``bench_views``: the (h, w) patch grid of every view the
synthetic request holds (not a model setting; removed before the model is built).
InternVL3's request is cut from ``--image-size`` as its processor cuts it instead.
"""

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
