"""Tiny lfm2_vl models (random weights, fp32): a hybrid LM (conv, attention, conv,
attention) and prompts laid out as the LFM2-VL processor lays them out.

One image as two tiles of 8 x 8 patches and a 6 x 8-patch thumbnail:
``<|image_start|><|img_row_1_col_1|>`` + 16 ``<image>`` ``<|img_row_1_col_2|>`` + 16
``<|img_thumbnail|>`` + 12 ``<|image_end|>`` (4 x 4, 4 x 4 and 3 x 4 token grids after
the 2 x 2 pixel unshuffle); the packed patch rows of the thumbnail are padded to 64.
The two-image case adds a small image of one 6 x 6-patch view (3 x 3 tokens).
"""

import mlx.core as mx
import numpy as np
from conftest import TEXT, VOCAB, _init

IMAGE, START, END, ROW1COL1, ROW1COL2, THUMBNAIL = 90, 91, 92, 93, 94, 95
PATCH, MAX_PATCHES = 4, 64


def _model(model_type, seed):
    from mlx_vlm.models import lfm2_vl

    text = lfm2_vl.TextConfig(
        model_type="lfm2", num_attention_heads=4, num_key_value_heads=2,
        rope_theta=10000.0, block_dim=TEXT["hidden_size"], block_ff_dim=96,
        block_auto_adjust_ff_dim=False, conv_L_cache=3, norm_eps=1e-5,
        layer_types=["conv", "full_attention", "conv", "full_attention"],
        **{**TEXT, "num_hidden_layers": 4},
    )  # fmt: skip
    vision = lfm2_vl.VisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, patch_size=PATCH, num_patches=16,
    )  # fmt: skip
    cfg = lfm2_vl.ModelConfig(
        text_config=text, vision_config=vision, model_type=model_type,
        downsample_factor=2, image_token_id=IMAGE, projector_hidden_size=48,
    )  # fmt: skip
    return _init(lfm2_vl.Model(cfg), seed)


def _views(shapes, seed):
    """Packed patch rows [V, 64, 48], their mask [V, 64] and ``spatial_shapes``."""
    rng = np.random.default_rng(seed + 1)
    pixels = np.zeros((len(shapes), MAX_PATCHES, 3 * PATCH * PATCH), np.float32)
    mask = np.zeros((len(shapes), MAX_PATCHES), np.int32)
    for i, (h, w) in enumerate(shapes):
        pixels[i, : h * w] = rng.standard_normal((h * w, pixels.shape[-1]))
        mask[i, : h * w] = 1
    return dict(
        pixel_values=mx.array(pixels),
        pixel_attention_mask=mx.array(mask),
        spatial_shapes=mx.array(np.array(shapes, dtype=np.int32)),
    )


TILED = [START, ROW1COL1] + [IMAGE] * 16 + [ROW1COL2] + [IMAGE] * 16
TILED += [THUMBNAIL] + [IMAGE] * 12 + [END]
SMALL = [START] + [IMAGE] * 9 + [END]


def _sample(images, shapes, seed, before=5, after=7):
    rng = np.random.default_rng(seed)
    text = rng.integers(3, 60, size=before + after + 3).tolist()
    ids = text[:before] + images[0]
    for image in images[1:]:
        ids += text[before + after :] + image
    ids += text[before : before + after]
    return dict(input_ids=mx.array([ids], dtype=mx.int32), **_views(shapes, seed))


def tiny_lfm2_vl(seed=0):
    # model_type as published LFM2-VL configs spell it
    sample = _sample([TILED], [(8, 8), (8, 8), (6, 8)], seed)
    return _model("lfm2-vl", seed), sample


def tiny_lfm2_vl_two_images(seed=0):
    # the other spelling mlx-vlm accepts, on a two-image prompt
    sample = _sample([TILED, SMALL], [(8, 8), (8, 8), (6, 8), (6, 6)], seed)
    return _model("lfm2_vl", seed), sample


BUILDERS = {"lfm2-vl": tiny_lfm2_vl, "lfm2_vl-2images": tiny_lfm2_vl_two_images}


def _positions(model, ids, sample, extra):
    return np.arange(ids.shape[1] + extra)


def _parts(model):
    inner = model.language_model.model
    return inner.layers, inner.embed_tokens, inner.embedding_norm


def _angles(model, positions, i=0):
    from reference import _rope_angles  # reference.py imports this file

    first = next(layer for layer in _parts(model)[0] if layer.is_attention_layer)
    return _rope_angles(first.self_attn.rope, positions)


def _layer(model, layer, h, mask, positions):
    return layer(h, mask, cache=None)


# ``reference.ReferenceArch`` fields, per model type: the convolution layers run on
# the reduced prompt (``attends`` False).
LFM2_VL = dict(
    positions=_positions, angles=_angles, layer=_layer, parts=_parts,
    attends=lambda layer: layer.is_attention_layer,
)  # fmt: skip
REFERENCE = {"lfm2-vl": LFM2_VL, "lfm2_vl": LFM2_VL}
