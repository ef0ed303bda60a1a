"""Tiny llava_onevision and InternVL models for the shared tests (random weights, fp32).

llava_onevision: a 32 px SigLIP tower with 8 px patches (a 4 x 4 base grid) and AnyRes
tiles of 2 x 2 crops for a 40 x 60 image: the 8 x 8 tile grid unpadded to 6 x 8, a
newline after each row. 16 + 6 * (8 + 1) = 70 visual tokens in three segments (base,
tile grid, newlines).

internvl_chat: 64 px tiles of 8 px patches, pixel-shuffled to 4 x 4 = 16 tokens per
tile; two tiles and a thumbnail (48 visual tokens, three segments); q/k RMSNorm on
(the LM's projections have no bias).
"""

import mlx.core as mx
import numpy as np
from conftest import TEXT, VOCAB, _ids, _init

ONEVISION_SIZE = (40, 60)  # (height, width) of the "original" image
ONEVISION_TOKENS = 16 + 6 * 9


def tiny_llava_onevision(seed=0):
    from mlx_vlm.models import llava_onevision as ov

    cfg = ov.ModelConfig(
        text_config=ov.TextConfig(
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=10000.0,
            **TEXT,
        ),
        vision_config=ov.VisionConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        image_token_index=90,
        video_token_index=91,
        vocab_size=VOCAB,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
    )
    model = _init(ov.Model(cfg), seed)
    mx.random.seed(seed + 1)
    sample = dict(
        input_ids=_ids(5, ONEVISION_TOKENS, 7, 90, seed),
        pixel_values=mx.random.normal((1, 5, 3, 32, 32)),
        image_sizes=mx.array([ONEVISION_SIZE]),
    )
    return model, sample


def tiny_internvl_chat(seed=0):
    from mlx_vlm.models import internvl_chat as ivl

    cfg = ivl.ModelConfig(
        text_config=ivl.TextConfig(
            model_type="qwen2",
            num_attention_heads=4,
            num_key_value_heads=2,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            attention_bias=False,
            **TEXT,
        ),
        vision_config=ivl.VisionConfig(
            model_type="intern_vit_6b",
            hidden_size=32,
            num_attention_heads=2,
            patch_size=8,
            num_hidden_layers=2,
            intermediate_size=64,
            image_size=64,
        ),
        model_type="internvl_chat",
        image_token_index=90,
        video_token_index=91,
        vocab_size=VOCAB,
    )
    model = _init(ivl.Model(cfg), seed)
    mx.random.seed(seed + 1)
    ids = _ids(5, INTERNVL_TOKENS, 7, 90, seed).tolist()[0]
    ids[4], ids[5 + INTERNVL_TOKENS] = 92, 93  # <img> ... </img>
    sample = dict(
        input_ids=mx.array([ids], dtype=mx.int32),
        pixel_values=mx.random.normal((3, 3, 64, 64)),
    )
    return model, sample


INTERNVL_TOKENS = 3 * 16
BUILDERS = {
    "llava_onevision": tiny_llava_onevision,
    "internvl_chat": tiny_internvl_chat,
}


def _positions(model, ids, sample, extra):
    return np.arange(ids.shape[1] + extra)


def _onevision_angles(model, positions, i=0):
    from reference import _rope_angles  # the reference's own reader of nn.RoPE

    return _rope_angles(model.language_model.model.layers[0].self_attn.rope, positions)


def _layer(model, layer, h, mask, positions):
    return layer(h, mask, None)


def _internvl_angles(model, positions, i=0):
    from reference import _rope_angles

    rotary = model.language_model.model.layers[0].self_attn.rotary_emb
    return _rope_angles(rotary, positions)


# (positions, angles, layer) per architecture: reference.ReferenceArch's fields.
REFERENCES = {
    "llava_onevision": (_positions, _onevision_angles, _layer),
    "internvl_chat": (_positions, _internvl_angles, _layer),
}
