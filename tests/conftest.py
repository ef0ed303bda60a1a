"""Shared fixtures: tiny in-memory mlx-vlm models (random weights, fp32, 2 LM layers).

Each builder returns ``(model, sample)`` where ``sample`` holds a prompt's ``input_ids``
[1, T] with one image expanded to its visual tokens, ``pixel_values`` and any extra
model inputs (``image_grid_thw`` for Qwen), as a processor would produce them.
"""

import os

import mlx.core as mx
import numpy as np
import pytest
import tiny_gemma3

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VOCAB = 96
TEXT = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=96, vocab_size=VOCAB)


def _init(model, seed):
    # Random weights at a scale that keeps logits varied (nothing saturates).
    mx.random.seed(seed)
    params = model.parameters()
    from mlx.utils import tree_flatten, tree_unflatten

    flat = [(k, mx.random.normal(v.shape) * 0.08) for k, v in tree_flatten(params)]
    model.update(tree_unflatten(flat))
    model.eval()
    mx.eval(model.parameters())
    return model


def _ids(before, n_image, after, image_token, seed, prefix=()):
    rng = np.random.default_rng(seed)
    text = rng.integers(3, 60, size=before + after).tolist()
    ids = list(prefix) + text[:before] + [image_token] * n_image + text[before:]
    return mx.array([ids], dtype=mx.int32)


def tiny_llava(seed=0, *, rope_scaling=None, heads=4, kv_heads=2):
    from mlx_vlm.models import llava

    cfg = llava.ModelConfig.from_dict(
        dict(
            model_type="llava",
            image_token_index=90,
            vocab_size=VOCAB,
            text_config=llava.TextConfig(
                model_type="llama",
                num_attention_heads=heads,
                num_key_value_heads=kv_heads,
                rope_scaling=rope_scaling,
                **TEXT,
            ),
            vision_config=llava.VisionConfig(
                model_type="clip_vision_model",
                num_hidden_layers=2,
                hidden_size=32,
                intermediate_size=64,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
            ),
        )
    )
    model = _init(llava.Model(cfg), seed)
    mx.random.seed(seed + 1)
    sample = dict(
        input_ids=_ids(5, 16, 7, 90, seed),
        pixel_values=mx.random.normal((1, 3, 32, 32)),
    )
    return model, sample


def _qwen(module, vision, seed):
    text = dict(
        model_type=module.__name__.rsplit(".", 1)[-1],
        num_attention_heads=4,
        num_key_value_heads=2,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        **TEXT,
    )
    cfg = module.ModelConfig(
        text_config=module.TextConfig(**text),
        vision_config=module.VisionConfig(**vision),
        model_type=text["model_type"],
        image_token_id=90,
        video_token_id=91,
        vision_start_token_id=92,
        vocab_size=VOCAB,
    )
    model = _init(module.Model(cfg), seed)
    # A 1 x 8 x 8 patch grid, merged 2 x 2: 16 visual tokens on a 4 x 4 grid.
    mx.random.seed(seed + 1)
    sample = dict(
        input_ids=_ids(5, 16, 7, 90, seed, prefix=()),
        pixel_values=mx.random.normal((64, 3 * 2 * 4 * 4)),
        image_grid_thw=mx.array([[1, 8, 8]]),
    )
    ids = sample["input_ids"].tolist()[0]
    ids[4] = 92  # <|vision_start|> right before the image tokens
    sample["input_ids"] = mx.array([ids], dtype=mx.int32)
    return model, sample


def tiny_qwen2_vl(seed=0):
    from mlx_vlm.models import qwen2_vl

    vision = dict(
        depth=1,
        embed_dim=32,
        hidden_size=64,
        num_heads=2,
        patch_size=4,
        mlp_ratio=2,
        spatial_patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return _qwen(qwen2_vl, vision, seed)


def tiny_qwen2_5_vl(seed=0):
    from mlx_vlm.models import qwen2_5_vl

    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=48,
        out_hidden_size=64,
        num_heads=2,
        patch_size=4,
        spatial_patch_size=4,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=16,
        fullatt_block_indexes=[1],
    )
    return _qwen(qwen2_5_vl, vision, seed)


def _two_images(build):
    """``build``'s model with a prompt of two images (the second one flipped)."""

    def two(seed=0):
        model, sample = build(seed)
        ids = sample["input_ids"][0].tolist()
        cut = len(ids) - 3  # the second image goes after the first's text
        ids = mx.array([ids[:cut] + ids[: len(ids) - 7][-17:] + ids[cut:]])
        pixels = sample["pixel_values"]
        two = dict(sample, input_ids=ids.astype(mx.int32))
        two["pixel_values"] = mx.concatenate([pixels, pixels[::-1]], axis=0)
        if "image_grid_thw" in sample:
            two["image_grid_thw"] = mx.concatenate([sample["image_grid_thw"]] * 2)
        return model, two

    return two


# Keyed by case; a case's architecture is its model's model_type.
BUILDERS = {
    "llava": tiny_llava,
    "qwen2_vl": tiny_qwen2_vl,
    "qwen2_5_vl": tiny_qwen2_5_vl,
    "llava-2images": _two_images(tiny_llava),
    "qwen2_vl-2images": _two_images(tiny_qwen2_vl),
    **tiny_gemma3.BUILDERS,
}
BUILDERS.update(__import__("tiny_qwen3").BUILDERS)  # Qwen3-VL, Qwen3.5


# Architectures with their tiny models in their own files.
from tiny_idefics3 import BUILDERS as _IDEFICS3  # noqa: E402
from tiny_lfm2_vl import BUILDERS as _LFM2_VL  # noqa: E402

BUILDERS.update({**_IDEFICS3, **_LFM2_VL})


from tiny_onevision import BUILDERS as _TILED  # noqa: E402 (needs the helpers above)

BUILDERS.update(_TILED)
BUILDERS.update(__import__("tiny_internvl").BUILDERS)  # InternVL, Hugging Face layout


@pytest.fixture(params=sorted(BUILDERS))
def arch(request):
    """Each supported architecture's name, in turn."""
    return request.param
