"""Tiny idefics3 / smolvlm models (random weights, fp32) with a tiled image prompt.

One image cut into two tiles (one row) plus the global image, laid out as the
Idefics3/SmolVLM processor lays it out: ``<fake><row_1_col_1>`` + 16 ``<image>``,
``<fake><row_1_col_2>`` + 16 ``<image>``, a newline, then ``\\n<fake><global-img>`` +
16 ``<image>`` ``<fake>``: three runs of image tokens, each a 4 x 4 token grid after
the pixel shuffle (8 x 8 patches of 4 px, scale factor 2).
"""

import mlx.core as mx
import numpy as np
from conftest import TEXT, VOCAB, _init

IMAGE, FAKE, GLOBAL, ROW1COL1, ROW1COL2, NEWLINE = 90, 91, 92, 93, 94, 11
VIEW_TOKENS = 16


def _config(module, model_type):
    text = module.TextConfig(
        model_type="llama", num_attention_heads=4, num_key_value_heads=2,
        rms_norm_eps=1e-5, rope_theta=10000.0, **TEXT,
    )  # fmt: skip
    vision = module.VisionConfig(
        model_type="siglip_vision_model", hidden_size=32, num_attention_heads=2,
        patch_size=4, num_hidden_layers=1, intermediate_size=64, image_size=32,
    )  # fmt: skip
    return module.ModelConfig(
        text_config=text, vision_config=vision, model_type=model_type,
        vocab_size=VOCAB, scale_factor=2, image_token_id=IMAGE,
    )  # fmt: skip


def tiled_ids(seed, before=5, after=7):
    """A prompt with one image as two tiles and the global image."""
    rng = np.random.default_rng(seed)
    text = rng.integers(3, 60, size=before + after).tolist()
    image = [FAKE, ROW1COL1] + [IMAGE] * VIEW_TOKENS
    image += [FAKE, ROW1COL2] + [IMAGE] * VIEW_TOKENS + [NEWLINE]
    image += [NEWLINE, FAKE, GLOBAL] + [IMAGE] * VIEW_TOKENS + [FAKE]
    return mx.array([text[:before] + image + text[before:]], dtype=mx.int32)


def _build(module, model_type, seed):
    model = _init(module.Model(_config(module, model_type)), seed)
    mx.random.seed(seed + 1)
    sample = dict(
        input_ids=tiled_ids(seed),
        pixel_values=mx.random.normal((1, 3, 3, 32, 32)),
        pixel_attention_mask=mx.ones((1, 3, 32, 32), dtype=mx.bool_),
    )
    return model, sample


def tiny_smolvlm(seed=0):
    from mlx_vlm.models import smolvlm

    return _build(smolvlm, "smolvlm", seed)


def tiny_idefics3(seed=0):
    from mlx_vlm.models import idefics3

    return _build(idefics3, "idefics3", seed)


BUILDERS = {"smolvlm": tiny_smolvlm, "idefics3": tiny_idefics3}


def _positions(model, ids, sample, extra):
    return np.arange(ids.shape[1] + extra)


def _angles(model, positions, i=0):
    from reference import _rope_angles  # reference.py imports this file

    return _rope_angles(model.language_model.layers[0].self_attn.rope, positions)


def _layer(model, layer, h, mask, positions):
    return layer(h, mask, None)


def _parts(model):
    lm = model.language_model  # idefics3 keeps its layers on the LM itself
    return lm.layers, lm.embed_tokens, lm.norm


# ``reference.ReferenceArch`` fields, per model type.
IDEFICS3 = dict(positions=_positions, angles=_angles, layer=_layer, parts=_parts)
REFERENCE = {"smolvlm": IDEFICS3, "idefics3": IDEFICS3}
