"""gemma3 (SigLIP tower + Gemma 3 LM) in mlx-vlm 0.7.10: the only Gemma-3-aware code.

The prompt holds ``<start_of_image>``, 256 image tokens, ``<end_of_image>``; the
reduced prompt keeps the two markers around the M reduced tokens. mlx-vlm's merge
divides the image features by sqrt(hidden) and the language model multiplies every
embedding back, so reduced features go through that same merge
(``cached_image_features``). The merge needs an attention ``mask`` (None raises): the
reduced prompt carries one, and the patched model supplies all-ones when none is given.

Patched by class swap: the model (that mask), ``LanguageModel`` (plan once per forward)
and every layer's ``Attention``, which re-runs mlx-vlm's attention (q/k RMSNorm, then
RoPE at the plan's per-token positions, ``query_pre_attn_scalar`` scale) with the
plan's mask. Two layer kinds, five sliding to one global in the published models:
sliding layers (local RoPE base, a window of ``sliding_window`` cache slots, a ring
buffer cache) and global layers (global base with its linear scaling). Each kind gets
its own distance bias. The window is counted in cache slots, as mlx-vlm counts it and
as the ring buffer holds keys: on a reduced prompt it reaches further back in original
positions than it would unreduced. With no plan it calls mlx-vlm's own ``__call__``.
"""

import mlx.core as mx
import mlx.nn as nn

from ..core import calibration as cal
from ..core.types import Segment
from ..errors import UnsupportedArchitecture
from .contract import (
    LayerFrequencies,
    ReducedLayout,
    RopeFrequencies,
    VisionOutput,
    whole_picture,
)
from .llava import positioned_layout, token_runs
from .patching import (
    attend_fetched,
    cache_key_order,
    language_layers,
    model_and_attention_patch,
    normed_qkv,
    normed_queries_keys,
    nothing_after_layer,
)

NAMES = ("gemma3",)


class _Model:
    def get_input_embeddings(self, input_ids=None, pixel_values=None, mask=None, **kw):
        if mask is None and pixel_values is not None and input_ids is not None:
            # mlx-vlm's merge raises without a mask; one unpadded prompt sees all.
            mask = mx.ones(input_ids.shape, dtype=mx.int32)
        return super().get_input_embeddings(input_ids, pixel_values, mask=mask, **kw)


class _Attention:
    def __call__(self, x, mask=None, cache=None):
        plan = self._restore.plan
        if plan is None:
            return super().__call__(x, mask, cache)
        q, k, v = normed_qkv(self, x)
        q, k = plan.apply_rope(self.rope, q), plan.apply_rope(self.rope, k)
        if cache is not None:
            k, v = cache.update_and_fetch(k, v)
        from mlx_vlm.models.base import kv_sequence_length

        num_keys = kv_sequence_length(k)
        if isinstance(mask, mx.array) and mask.shape[-1] != num_keys:
            mask = mask[..., -num_keys:]  # as mlx-vlm trims its window mask
        keys = cache_key_order(cache, num_keys)
        mask = plan.mask(self._restore_layer, mask, keys)
        return attend_fetched(self, plan, q, k, v, mask, cache, keys)


patch, unpatch = model_and_attention_patch(_Model, _Attention)


layers = language_layers
after_layer = nothing_after_layer


def _window(model, attn):
    return model.language_model.config.sliding_window if attn.is_sliding else None


def rope_frequencies(model) -> LayerFrequencies:
    """Per layer: its RoPE frequencies (local or global base, linear scaling folded
    in) and, on sliding layers, the window."""
    kinds, of_layer, index = [], [], {}
    for layer in layers(model):
        attn = layer.self_attn
        rope = attn.rope
        if type(rope) is not nn.RoPE:
            raise UnsupportedArchitecture(
                f"gemma3 with {type(rope).__name__} RoPE scaling is not supported "
                "(default and linear RoPE are); use a checkpoint without rope_scaling "
                "or with rope_type 'linear'"
            )
        key = (rope.dims, rope.base, rope.scale, _window(model, attn))
        if key not in index:
            index[key] = len(kinds)
            thetas = cal.rope_thetas(rope.dims, rope.base, scale=rope.scale)
            kinds.append(RopeFrequencies(thetas, window=key[-1]))
        of_layer.append(index[key])
    return LayerFrequencies(tuple(kinds), tuple(of_layer))


def image_spans(model, input_ids):
    """The runs of image tokens in ``input_ids`` [1, T], one per image."""
    return token_runs(input_ids, model.config.image_token_index)


def _embedding_dtype(model):
    # The merge casts pixels to the text embeddings' dtype (quantized ones included).
    return model.language_model.model.embed_tokens(mx.array([[0]])).dtype


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] as mlx-vlm's merge takes them (projector output, before
    its 1/sqrt(hidden)), their square grid and, when ``need_cls`` names a method that
    reads it, the substitute for [CLS] attention [1, N] (SigLIP has no [CLS]): the mean
    attention each patch receives in the last vision block, averaged over the patches
    each token pools."""
    pixels = pixel_values.transpose(0, 2, 3, 1).astype(_embedding_dtype(model))
    hidden, _, states = model.vision_tower(pixels, output_hidden_states=True)
    projector = model.multi_modal_projector
    features = projector(hidden)
    images, n, _ = features.shape  # one row of 256 tokens per image
    side = projector.tokens_per_side
    segments = tuple(Segment(i * n, n, (side, side), image=i) for i in range(images))
    cls = None
    if need_cls:
        vision = model.vision_tower.vision_model
        patches = received_attention(vision.encoder.layers[-1], states[-2])
        cls = pool_patches(patches, projector.patches_per_image, projector.kernel_size)
        cls = cls.reshape(1, -1)
    features = features.reshape(1, images * n, -1)
    grid = (side, side) if images == 1 else None
    return VisionOutput(features, grid, cls, segments)


def received_attention(block, hidden, chunk: int = 512) -> mx.array:
    """[B, T] mean attention each patch receives (over queries and heads) in vision
    ``block``, recomputed from ``hidden`` [B, T, C] entering it (mlx-vlm's towers
    return no attention maps). Queries go in chunks: T x T per head never exists."""
    attn = block.self_attn
    h = block.layer_norm1(hidden)
    B, T, _ = h.shape
    heads = attn.num_heads
    q = attn.q_proj(h).reshape(B, T, heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(h).reshape(B, T, heads, -1).transpose(0, 2, 1, 3)
    total = mx.zeros((B, heads, T), dtype=mx.float32)
    for start in range(0, T, chunk):
        logits = (q[:, :, start : start + chunk] * attn.scale) @ k.swapaxes(-1, -2)
        total = total + mx.softmax(logits.astype(mx.float32), axis=-1).sum(axis=2)
        mx.eval(total)
    return total.mean(axis=1) / T


def pool_patches(values, patches_per_side: int, kernel: int) -> mx.array:
    """[B, P*P] per-patch values averaged over each token's ``kernel`` x ``kernel``
    patches, in the projector's token order (row-major): [B, (P/kernel)^2]."""
    B, side = values.shape[0], patches_per_side // kernel
    grid = values.reshape(B, side, kernel, side, kernel)
    return grid.mean(axis=(2, 4)).reshape(B, side * side)


def cached_image_features(features):
    """``features`` [1, N, D] as mlx-vlm's gemma3 merge takes them (as they are)."""
    return features


def full_positions(model, input_ids, sample):
    """Unreduced RoPE positions [T] (0..T-1)."""
    return mx.arange(input_ids.shape[1], dtype=mx.int32)


def layout(model, request) -> ReducedLayout:
    """The reduced prompt: ids (markers kept around the reduced image tokens),
    positions, decode shift, generate kwargs with the merge's mask."""
    merge = image_kwargs(model, request.features, request.extra)
    merge["mask"] = mx.ones((1, request.columns.shape[0]), dtype=mx.int32)
    return positioned_layout(request, merge)


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower."""
    return {"cached_image_features": cached_image_features(features)}


def first_layer_input(model, embeds):
    """The embeddings scaled by sqrt(hidden), rounded to bfloat16 as Gemma's forward
    scales them (text and image alike)."""
    scale = model.language_model.config.hidden_size**0.5
    return embeds * mx.array(scale, mx.bfloat16).astype(embeds.dtype)


def run_layer(model, layer, h, positions):
    """One LM layer on the full prompt without cache (for in-LLM scoring), with its
    sliding window where it has one."""
    from mlx_vlm.models.base import create_attention_mask

    window = _window(model, layer.self_attn)
    return layer(h, create_attention_mask(h, None, window_size=window), None)


queries_keys = normed_queries_keys


# Each image is one view, stretched over the whole picture.
segment_boxes = whole_picture
