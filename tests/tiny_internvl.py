"""Tiny InternVL in the Hugging Face layout (mlx-vlm's ``internvl``: InternViT tower,
pixel shuffle, layer-normed MLP projector, Qwen3 LM with q/k RMSNorm), random fp32.

As the ``internvl_chat`` tiny model: 64 px tiles of 8 px patches, pixel-shuffled to
4 x 4 = 16 tokens per tile; two tiles and a thumbnail between ``<img>`` and
``</img>`` (48 visual tokens in one run, three segments).
"""

import mlx.core as mx
import numpy as np
from conftest import TEXT, VOCAB, _ids, _init

TOKENS = 3 * 16


def tiny_internvl(seed=0):
    from mlx_vlm.models import internvl as ivl

    cfg = ivl.ModelConfig(
        text_config=ivl.TextConfig(
            model_type="qwen3",
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            rms_norm_eps=1e-6,
            rope_theta=10000.0,
            max_position_embeddings=4096,
            tie_word_embeddings=False,
            **TEXT,
        ),
        vision_config=ivl.VisionConfig(
            model_type="internvl_vision",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=64,
            patch_size=8,
        ),
        model_type="internvl",
        image_token_id=90,
    )
    model = _init(ivl.Model(cfg), seed)
    mx.random.seed(seed + 1)
    ids = _ids(5, TOKENS, 7, 90, seed).tolist()[0]
    ids[4], ids[5 + TOKENS] = 92, 93  # <img> ... </img>
    sample = dict(
        input_ids=mx.array([ids], dtype=mx.int32),
        pixel_values=mx.random.normal((3, 3, 64, 64)),
    )
    return model, sample


BUILDERS = {"internvl": tiny_internvl}


def _positions(model, ids, sample, extra):
    return np.arange(ids.shape[1] + extra)


def _angles(model, positions, i=0):
    from reference import _rope_angles

    return _rope_angles(model.language_model.model.layers[i].self_attn.rope, positions)


def _layer(model, layer, h, mask, positions):
    return layer(h, mask, None)


def _merge(model, input_ids, features):
    # Written here in numpy, not restore_mlx's patched merge: mlx-vlm's own ignores
    # cached features. Token embeddings, features in the image tokens' rows in order.
    ids = np.array(input_ids)[0]
    embeds = np.array(model.language_model.model.embed_tokens(input_ids))
    rows = np.flatnonzero(ids == model.config.image_token_id)
    embeds[0, rows] = np.array(features).reshape(rows.shape[0], -1)
    return mx.array(embeds)


# reference.ReferenceArch's fields.
REFERENCES = {
    "internvl": dict(positions=_positions, angles=_angles, layer=_layer, merge=_merge)
}
