"""Tiny gemma3 for the shared tests: builder (``BUILDERS``) and calibration reference
(``REFERENCE``).

Three LM layers with ``sliding_window_pattern`` 3 (two sliding, one global), so each
of layer 0 (uniform sizes), a later sliding layer and a global layer is covered; the
global layers' linear RoPE scaling is on. The 30-token prompt is longer than the
16-token window: the window binds in prefill and the sliding layers' ring buffer wraps
as soon as decoding starts.
"""

import mlx.core as mx
import numpy as np

BOI, EOI, IMAGE = 88, 89, 90
WINDOW = 16


def tiny_gemma3(seed=0, *, sliding_window=WINDOW, before=5, after=7):
    from conftest import VOCAB, _init
    from mlx_vlm.models import gemma3

    text = gemma3.TextConfig(
        model_type="gemma3_text",
        hidden_size=64,
        num_hidden_layers=3,
        intermediate_size=96,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=24,
        vocab_size=VOCAB,
        sliding_window=sliding_window,
        sliding_window_pattern=3,
        rope_scaling={"rope_type": "linear", "factor": 2.0},
        mm_tokens_per_image=16,
    )
    vision = gemma3.VisionConfig(
        model_type="siglip_vision_model",
        num_hidden_layers=2,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=2,
        patch_size=4,
        image_size=32,
    )
    cfg = gemma3.ModelConfig(
        text_config=text,
        vision_config=vision,
        model_type="gemma3",
        vocab_size=VOCAB,
        image_token_index=IMAGE,
        hidden_size=64,
    )
    model = _init(gemma3.Model(cfg), seed)
    rng = np.random.default_rng(seed)
    words = rng.integers(3, 60, size=before + after).tolist()
    ids = words[:before] + [BOI] + [IMAGE] * 16 + [EOI] + words[before:]
    mx.random.seed(seed + 1)
    sample = dict(
        input_ids=mx.array([ids], dtype=mx.int32),
        pixel_values=mx.random.normal((1, 3, 32, 32)),
        # The processor's attention mask: mlx-vlm's gemma3 merge needs one.
        mask=mx.ones((1, len(ids)), dtype=mx.int32),
    )
    return model, sample


def _positions(model, ids, sample, extra):
    return np.arange(ids.shape[1] + extra)


def _angles(model, positions, index):
    from reference import _rope_angles

    rope = model.language_model.model.layers[index].self_attn.rope
    return _rope_angles(rope, positions)


def _layer(model, layer, h, mask, positions):
    return layer(h, mask, None)


def _window(model, index):
    attn = model.language_model.model.layers[index].self_attn
    return model.language_model.config.sliding_window if attn.is_sliding else None


def _inputs(model, embeds):
    # Gemma's forward scales every embedding by sqrt(hidden), rounded to bfloat16.
    scale = model.language_model.config.hidden_size**0.5
    return embeds * mx.array(scale, mx.bfloat16).astype(embeds.dtype)


BUILDERS = {"gemma3": tiny_gemma3}

# Shared bit-exactness cases that cannot hold once a ring buffer is in use; what does
# hold is tested in tests/test_gemma3.py.
RING_BUFFER = {
    "gemma3": "once the sliding window binds, the ring buffer (RotatingKVCache) trims "
    "and reorders keys, so SDPA sums in another order: mlx-vlm's own chunked prefill "
    "differs from its one-shot prefill in the last bits; test_gemma3.py checks this "
    "case to the bit with a window that holds the run, and to 1e-5 with it binding"
}


def reference_entries(ReferenceArch):
    """``REFERENCE`` entries (``ReferenceArch`` passed in: reference.py imports us)."""
    return {"gemma3": ReferenceArch(_positions, _angles, _layer, _window, _inputs)}
