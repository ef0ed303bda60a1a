"""Tiny in-memory Qwen3-VL and Qwen3.5 models for the shared tests (fp32, random).

The same prompt layout as the Qwen2-VL builders in ``conftest``: a 1 x 8 x 8 patch
grid merged 2 x 2 into 16 visual tokens, ``<|vision_start|>`` right before them.
Qwen3-VL gets two deepstack levels (added after LM layers 0 and 1) and an interleaved
M-RoPE section that only the model's own selector places right; Qwen3.5 gets the
hybrid stack (linear attention on 3 of 4 layers) with partial rotary.
"""

import mlx.core as mx
import numpy as np

# Interleaved over 8 frequencies: t at 0, 3, 6, 7, h at 1, 4 and w at 2, 5.
SECTION = [4, 2, 2]


def _vision(model_type, **extra):
    return dict(
        model_type=model_type, depth=2, hidden_size=32, intermediate_size=48,
        out_hidden_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
        temporal_patch_size=2, num_position_embeddings=64, **extra,
    )  # fmt: skip


def _build(module, text, vision, seed):
    import conftest

    cfg = module.ModelConfig(
        text_config=module.TextConfig(**text),
        vision_config=module.VisionConfig(**vision),
        model_type=text["model_type"],
        image_token_id=90,
        video_token_id=91,
        vision_start_token_id=92,
        vocab_size=conftest.VOCAB,
    )
    model = conftest._init(module.Model(cfg), seed)
    mx.random.seed(seed + 1)
    ids = conftest._ids(5, 16, 7, 90, seed).tolist()[0]
    ids[4] = 92  # <|vision_start|> right before the image tokens
    sample = dict(
        input_ids=mx.array([ids], dtype=mx.int32),
        pixel_values=mx.random.normal((64, 3 * 2 * 4 * 4)),
        image_grid_thw=mx.array([[1, 8, 8]]),
    )
    return model, sample


def _qwen3_vl_text(model_type):
    import conftest

    return dict(
        model_type=model_type, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, rms_norm_eps=1e-6, rope_theta=10000.0,
        max_position_embeddings=4096, tie_word_embeddings=False,
        rope_scaling={"type": "default", "mrope_section": SECTION,
                      "mrope_interleaved": True},
        **conftest.TEXT,
    )  # fmt: skip


def tiny_qwen3_vl(seed=0):
    from mlx_vlm.models import qwen3_vl

    vision = _vision("qwen3_vl", deepstack_visual_indexes=[0, 1])
    return _build(qwen3_vl, _qwen3_vl_text("qwen3_vl"), vision, seed)


def tiny_qwen3_vl_moe(seed=0):
    from mlx_vlm.models import qwen3_vl_moe

    text = dict(
        _qwen3_vl_text("qwen3_vl_moe"),
        num_experts=4,
        num_experts_per_tok=2,
        decoder_sparse_step=1,
        mlp_only_layers=[],
        moe_intermediate_size=32,
    )
    vision = _vision("qwen3_vl_moe", deepstack_visual_indexes=[0])
    return _build(qwen3_vl_moe, text, vision, seed)  # fmt: skip


def _qwen3_5_text(model_type):
    import conftest

    # 4 layers, softmax attention on every 2nd (published models: every 4th), so two
    # layers take the bias: the first with the uniform sizes, the second the true ones.
    return dict(
        model_type=model_type, num_attention_heads=4, num_key_value_heads=2,
        head_dim=32, rms_norm_eps=1e-6, max_position_embeddings=4096,
        linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_conv_kernel_dim=4, full_attention_interval=2,
        tie_word_embeddings=False,
        rope_parameters={"type": "default", "mrope_section": SECTION,
                         "rope_theta": 10000.0, "partial_rotary_factor": 0.5},
        **{**conftest.TEXT, "num_hidden_layers": 4},
    )  # fmt: skip


def tiny_qwen3_5(seed=0):
    from mlx_vlm.models import qwen3_5

    return _build(qwen3_5, _qwen3_5_text("qwen3_5"), _vision("qwen3_5"), seed)


def tiny_qwen3_5_moe(seed=0):
    from mlx_vlm.models import qwen3_5_moe

    text = dict(
        _qwen3_5_text("qwen3_5_moe"),
        num_experts=4,
        num_experts_per_tok=2,
        shared_expert_intermediate_size=32,
        moe_intermediate_size=32,
    )
    del text["intermediate_size"]  # experts only
    return _build(qwen3_5_moe, text, _vision("qwen3_5_moe"), seed)  # fmt: skip


BUILDERS = {
    "qwen3_vl": tiny_qwen3_vl,
    "qwen3_vl_moe": tiny_qwen3_vl_moe,
    "qwen3_5": tiny_qwen3_5,
    "qwen3_5_moe": tiny_qwen3_5_moe,
}


# The calibration reference (tests/reference.py) for these architectures.


def _attention(model):
    """The first softmax-attention module of the language model."""
    layers = model.language_model.model.layers
    return next(layer.self_attn for layer in layers if hasattr(layer, "self_attn"))


def _angles(model, positions, i=0):
    """cos/sin [L, K] of the rotation the model applies at (t, h, w) ``positions``
    [3, L]: unit vectors rotated by the attention's own ``apply_rotary``, read back
    per rotated pair (k, k + K); dimensions past the rotated ones pass through."""
    rotary = _attention(model).rotary_emb
    K = rotary.inv_freq.shape[0]
    L = positions.shape[1]
    unit = np.zeros((1, 1, L, rotary.dim), dtype=np.float32)
    unit[..., :K] = 1.0
    pos = mx.array(np.asarray(positions)[:, None, :].astype(np.int32))
    x = mx.array(unit)
    rotated, _ = rotary.apply_rotary(x, x, pos, unsqueeze_dim=1)
    rotated = np.array(rotated[0, 0].astype(mx.float32)).astype(np.float64)
    return rotated[:, :K], rotated[:, K : 2 * K]


def _layer(model, layer, h, mask, positions):
    pos = mx.array(np.asarray(positions)[:, None, :].astype(np.int32))
    if getattr(layer, "is_linear", False):  # linear attention: the sequence as it is
        return layer(h, None, None)
    return layer(h, mask, None, pos, None)


def _reduced_level(level, red):
    """A deepstack level [N, D] reduced independently of restore_mlx's helper: a
    merged token's members averaged, any other token its own row."""
    assignment = np.array(red.assignment[0])
    merged, positions = np.array(red.merged[0]), np.array(red.positions[0])
    rows = [
        level[assignment == j].mean(axis=0) if merged[j] else level[positions[j]]
        for j in range(positions.shape[0])
    ]
    return np.stack(rows)


def _deepstack(model, sample, prepared, lay, decode_steps):
    """Each deepstack level from the tower, reduced, at the visual slots of ``lay``."""
    dtype = model.vision_tower.patch_embed.proj.weight.dtype
    pixels = sample["pixel_values"].astype(dtype)
    _, levels = model.vision_tower(pixels, sample["image_grid_thw"])
    length = lay.length + decode_steps
    out = {}
    for i, level in enumerate(levels):
        reduced = _reduced_level(np.array(level.astype(mx.float32)), prepared.reduction)
        full = np.zeros((length, reduced.shape[1]), dtype=np.float32)
        full[lay.slots[lay.visual]] = reduced
        out[i] = mx.array(full[None])
    return out


def _positions(model, ids, sample, extra):
    from reference import _qwen_positions

    return _qwen_positions(model, ids, sample, extra)


_QWEN3_VL = dict(
    positions=_positions, angles=_angles, layer=_layer, additions=_deepstack
)
_QWEN3_5 = dict(positions=_positions, angles=_angles, layer=_layer, reduced=True)
REFERENCE = {
    "qwen3_vl": _QWEN3_VL,
    "qwen3_vl_moe": _QWEN3_VL,
    "qwen3_5": _QWEN3_5,
    "qwen3_5_moe": _QWEN3_5,
}
