"""lfm2_vl (SigLIP2 NaFlex tower + pixel-unshuffle projector + LFM2 hybrid LM) in
mlx-vlm 0.7.10: the only LFM2-VL-aware code.

A large image is cut into 512 px tiles plus a thumbnail; the prompt holds
``<|image_start|>``, per tile ``<|img_row_i_col_j|>`` + its tokens, then
``<|img_thumbnail|>`` + the thumbnail's tokens, ``<|image_end|>`` (a small image is
one view). Every view is a segment on its own token grid: ceil(h/f) x ceil(w/f) of
its (h, w) patches (``spatial_shapes``), row-major, f the unshuffle factor.

The LM is hybrid: short convolutions in most layers, softmax attention (``nn.RoPE``
after ``q_layernorm``/``k_layernorm``, output ``out_proj``) in the others. Only the
attention layers are patched and take the bias; their caches carry the offset (the
convolution caches have none). Positions, layout and decode shift are llava's.
"""

import mlx.core as mx

from ..errors import UnsupportedMethod
from . import llava
from .contract import RopeFrequencies, VisionOutput
from .idefics3 import cached_image_features, image_kwargs, layout  # noqa: F401
from .llava import first_layer_input  # noqa: F401 (the same merge and input)
from .patching import (
    attend,
    attention_layers,
    has_attention,
    language_layers,
    nothing_after_layer,
    patch_language_model,
    unpatch_language_model,
)
from .tiles import image_processor, last_views, tile_boxes, view_segments

NAMES = ("lfm2_vl", "lfm2-vl")  # mlx-vlm loads both spellings; HF configs use the 2nd

layers = language_layers
after_layer = nothing_after_layer
image_spans = llava.image_spans
full_positions = llava.full_positions


class _Attention:
    def __call__(self, x, mask=None, cache=None):
        plan = self._restore.plan
        if plan is None:
            return super().__call__(x, mask=mask, cache=cache)
        q, k, v, _ = _project(self, x)
        q, k = plan.apply_rope(self.rope, q), plan.apply_rope(self.rope, k)
        mask = plan.mask(self._restore_layer, mask)
        return attend(self, plan, q, k, v, mask, cache)


def _project(attn, x):
    """Queries [B, H, L, D], keys and values [B, Hkv, L, D] before RoPE (after the
    q/k norms), and the keys as RoPE receives them, [B, L, Hkv*D]."""
    B, L, _ = x.shape
    q = attn.q_layernorm(attn.q_proj(x).reshape(B, L, attn.n_heads, -1))
    k = attn.k_layernorm(attn.k_proj(x).reshape(B, L, attn.n_kv_heads, -1))
    v = attn.v_proj(x).reshape(B, L, attn.n_kv_heads, -1)
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))
    return q, k, v, k.transpose(0, 2, 1, 3).reshape(B, L, -1)


def patch(model, state):
    """Swap the language model's and attention layers' classes; no weight changes."""
    patch_language_model(model, state, _Attention)


unpatch = unpatch_language_model


def rope_frequencies(model) -> RopeFrequencies:
    """The attention layers' 1-D RoPE frequencies."""
    return llava.nn_rope_frequencies(attention_layers(layers(model))[0].self_attn.rope)


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] as lfm2_vl prefills them (tiles, then the thumbnail,
    image after image), one segment per view; no [CLS] (SigLIP2 has none)."""
    if need_cls:
        raise UnsupportedMethod(
            f"method {need_cls!r} needs [CLS] attention, which the "
            f"{model.config.model_type} vision tower (SigLIP2) does not have; "
            "use a method without cls_attention, e.g. divprune"
        )
    shapes = sample["spatial_shapes"]
    views = model.encode_images(
        pixel_values,
        spatial_shapes=shapes,
        pixel_attention_mask=sample["pixel_attention_mask"],
    )
    f = model.config.downsample_factor
    grids = [(-(-h // f), -(-w // f)) for h, w in shapes.tolist()]
    runs = image_spans(model, sample["input_ids"])
    last = last_views(sample["input_ids"], runs, side="after")  # <|image_end|>
    lengths = [v.shape[0] for v in views]
    segments = view_segments(grids, lengths, runs, last)
    grid = grids[0] if len(views) == 1 else None
    return VisionOutput(mx.concatenate(views)[None], grid, segments=segments)


def run_layer(model, layer, h, positions):
    """One LM layer on the full prompt without cache (for in-LLM scoring)."""
    return layer(h, "causal" if has_attention(layer) else None, cache=None)


def queries_keys(model, layer, x, positions):
    """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and pre-RoPE (normed) keys
    [B, T, Hkv*D] of an attention layer."""
    attn = layer.self_attn
    q, k, _, flat = _project(attn, x)
    return attn.rope(q), attn.rope(k), flat


def segment_boxes(model, processor, picture, segments) -> tuple:
    """Every tile over its cell of the picture (resized to the tile grid before it
    is cut), the thumbnail as the overview; rows x cols as the image processor
    reports them for this picture (``image_rows``/``image_cols``)."""
    if sum(s.reducible for s in segments) == 1:
        return tile_boxes(segments, 1, 1)
    out = image_processor(processor).preprocess([picture.convert("RGB")])
    rows, cols = (int(out[k].reshape(-1)[0]) for k in ("image_rows", "image_cols"))
    return tile_boxes(segments, rows, cols)
