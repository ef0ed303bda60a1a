"""Gemma 3 shapes: Gemma-3-4B at full depth and with 6 LM layers, and a toy Gemma 3.

- ``gemma3-4b``: google/gemma-3-4b-it (SigLIP-so400m/14 at 896 px, 4096 patches
  pooled 4 x 4 into 256 image tokens; Gemma 3 LM, 34 layers, 5 sliding (1024 tokens,
  RoPE base 1e4) to 1 global (base 1e6, linear RoPE scaling 8)). 17 GB of fp32
  weights; ``gemma3-4b-6l`` keeps every published width with 6 LM layers (one 5:1
  period) and 4 vision layers, for machines that cannot hold or run the full depth.
- ``tiny-gemma3``: toy sizes for the smoke test, not a real shape.
"""

import copy

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
