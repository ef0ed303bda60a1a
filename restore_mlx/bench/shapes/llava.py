"""LLaVA shapes: LLaVA-OneVision (AnyRes tiling), and a toy LLaVA.

- ``llava-ov-0.5b``: llava-hf/llava-onevision-qwen2-0.5b-ov-hf through mlx-vlm's
  ``llava_onevision`` classes, as users prompt it: SigLIP-so400m/14 tower (384 px
  crops, 27 x 27 = 729 tokens each, last layer, no [CLS]), 2-layer GELU projector,
  Qwen2-0.5B LM, AnyRes tiling on 384 px pinpoints up to 6 x 6 with ``anyres_max_9``.
  The default 768 x 768 image is a base crop + 2 x 2 tiles: 729 + 54 x 54 tile tokens
  + 54 row newlines = 3,699 visual tokens (``--image-size`` sets the square side).
- ``tiny-llava``: toy sizes for the smoke test, not a real shape.
"""

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
