"""The Qwen2-VL probe: mlx-vlm's own ``qwen2_vl`` classes on the same scenes.

A Qwen2-VL tower with 4 px patches (24 x 24 per 96 px scene, 2-D rotary positions) and
its 2 x 2 patch merger gives 12 x 12 = 144 visual tokens, each covering the same 8 px
square as a LLaVA-probe token, so a cell is 3 x 3 tokens on both probes. The LM is
Qwen2 with M-RoPE: rope_theta and the (t, h, w) split of the rotary frequencies are
Qwen2-VL-2B's (theta 1e6, mrope_section [16, 24, 24] for head_dim 128), scaled to the
probe's head_dim 32: [4, 6, 6].

The prompt is mlx-vlm's qwen2_vl prompt: ``<|vision_start|>``, 144 ``<|image_pad|>``,
``<|vision_end|>``, then the question; positions come from the model's own
``get_rope_index``. Training runs the tower batched (mlx-vlm's loops over images one
by one with Python-side lengths, which ``mx.compile`` cannot trace); tests check that it
equals the tower's own output.
"""

import mlx.core as mx
import numpy as np

from .scenes import IMAGE_SIZE

PATCH = 4  # tower patch side in pixels; the 2 x 2 merger makes 8 px tokens
MERGE = 2
TEMPORAL = 2  # Qwen2-VL's temporal patch: a still image is repeated twice
MROPE_SECTION = (4, 6, 6)  # Qwen2-VL-2B's [16, 24, 24] at head_dim 32
ROPE_THETA = 1_000_000.0
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
SPECIALS = (VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
MEAN = STD = (0.5, 0.5, 0.5)
GRID_THW = (1, IMAGE_SIZE // PATCH, IMAGE_SIZE // PATCH)


def qwen_config(
    vocab: list, width=128, vision_layers=2, text_layers=3, rope_theta=ROPE_THETA
) -> dict:
    """config.json of a Qwen2-VL probe (LM keys at the root, as Qwen2-VL ships them)."""
    return {
        "model_type": "qwen2_vl",
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": text_layers,
        "num_attention_heads": width // 32,
        "num_key_value_heads": width // 32,
        "rms_norm_eps": 1e-6,
        "rope_theta": rope_theta,
        "rope_scaling": {"type": "mrope", "mrope_section": list(MROPE_SECTION)},
        "max_position_embeddings": 512,
        "vocab_size": len(vocab),
        "tie_word_embeddings": False,
        "image_token_id": vocab.index(IMAGE_PAD),
        "video_token_id": vocab.index(VIDEO_PAD),
        "vision_start_token_id": vocab.index(VISION_START),
        "vision_end_token_id": vocab.index(VISION_END),
        "eos_token_id": [vocab.index("</s>")],
        "vision_config": {
            "model_type": "qwen2_vl",
            "depth": vision_layers,
            "embed_dim": width // 2,
            "hidden_size": width,
            "num_heads": width // 64,
            "mlp_ratio": 4,  # mlx-vlm wants an int here
            "in_channels": 3,
            "patch_size": PATCH,
            "spatial_patch_size": PATCH,
            "spatial_merge_size": MERGE,
            "temporal_patch_size": TEMPORAL,
        },
    }


def build_qwen(config: dict):
    """An mlx-vlm qwen2_vl ``Model`` with fresh weights for ``config``."""
    import json

    from mlx_vlm.models import qwen2_vl

    cfg = json.loads(json.dumps(config))  # from_dict edits its argument
    model_config = qwen2_vl.ModelConfig.from_dict(cfg)
    model_config.text_config = qwen2_vl.TextConfig.from_dict(cfg)
    model_config.vision_config = qwen2_vl.VisionConfig.from_dict(cfg["vision_config"])
    return qwen2_vl.Model(model_config)


def patchify(images) -> np.ndarray:
    """uint8 [B, H, W, 3] -> float32 [B, 576, 96] pixel patches, as the saved Qwen2-VL
    image processor lays them out: merge groups of 2 x 2 patches contiguous, each patch
    channel-first and repeated over the temporal axis."""
    x = np.asarray(images, dtype=np.float32) * np.float32(1 / 255)
    x = (x - np.float32(MEAN[0])) / np.float32(STD[0])
    B, H, W, C = x.shape
    gh, gw = H // PATCH, W // PATCH
    x = x.transpose(0, 3, 1, 2)[:, None].repeat(TEMPORAL, axis=1)  # B, T, C, H, W
    x = x.reshape(B, TEMPORAL, C, gh // MERGE, MERGE, PATCH, gw // MERGE, MERGE, PATCH)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return np.ascontiguousarray(x.reshape(B, gh * gw, C * TEMPORAL * PATCH * PATCH))


def tower_features(model, patches: mx.array) -> mx.array:
    """Merged visual tokens [B, 144, D] of patches [B, 576, 96]; every image on its own
    (block-diagonal attention), as ``model.vision_tower(pixels, grid_thw)`` computes."""
    from mlx_vlm.models.qwen2_vl.vision import apply_rotary_pos_emb_vision

    tower = model.vision_tower
    B, N, _ = patches.shape
    x = tower.patch_embed(patches.reshape(B * N, -1)).reshape(B, N, -1)
    rotary = tower.rot_pos_emb(mx.array([GRID_THW]))
    for blk in tower.blocks:
        attn = blk.attn
        qkv = attn.qkv(blk.norm1(x)).reshape(B, N, 3, attn.num_heads, -1)
        q, k, v = (qkv[:, :, i] for i in range(3))  # [B, N, H, d]
        q = apply_rotary_pos_emb_vision(q, rotary).transpose(0, 2, 1, 3)
        k = apply_rotary_pos_emb_vision(k, rotary).transpose(0, 2, 1, 3)
        out = mx.fast.scaled_dot_product_attention(
            q, k, v.transpose(0, 2, 1, 3), scale=attn.scale
        )
        x = x + attn.proj(out.transpose(0, 2, 1, 3).reshape(B, N, -1))
        x = x + blk.mlp(blk.norm2(x))
    merged = tower.merger(x.reshape(B * N, -1))
    return merged.reshape(B, N // MERGE**2, -1)


def position_ids(model, text_len: int) -> mx.array:
    """M-RoPE positions [3, 1, L] of a probe prompt with ``text_len`` tokens after the
    image (vision end and the text), from the model's own ``get_rope_index``; they
    depend only on where the vision start and image tokens are."""
    cfg = model.config
    n = GRID_THW[1] * GRID_THW[2] // MERGE**2
    ids = [cfg.vision_start_token_id, *[cfg.image_token_id] * n, *[0] * text_len]
    pos, _ = model.language_model.get_rope_index(mx.array([ids]), mx.array([GRID_THW]))
    return pos


def layer_context(model, h: mx.array, positions: mx.array):
    """(mask, positions, rotary cos/sin) for calling the LM's decoder layers on ``h``,
    as ``Qwen2Model.__call__`` builds them."""
    from mlx_vlm.models.base import create_attention_mask

    lm = model.language_model.model
    rotary = lm.layers[0].self_attn.rotary_emb
    embeddings = rotary(h, positions)
    return create_attention_mask(h, None), positions, embeddings


def rotate_qk(attn, q: mx.array, k: mx.array, context):
    """q, k [B, H, L, d] rotated at the context's M-RoPE positions."""
    from mlx_vlm.models.qwen2_vl.language import apply_multimodal_rotary_pos_emb

    cos, sin = context[2]
    return apply_multimodal_rotary_pos_emb(q, k, cos, sin, unqueeze_dim=1)
