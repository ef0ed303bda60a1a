"""qwen2_vl / qwen2_5_vl in mlx-vlm 0.7.10: the only Qwen-aware code.

Positions need no patch: the LM takes ``position_ids`` (3, B, L) and ``rope_deltas``,
so the reduced prompt gets the kept columns of the full-sequence ``get_rope_index`` and
decode continues at ``max_position + 1 - reduced_length``. The bias does: Qwen's
``LanguageModel.__call__`` does not forward ``mask``, so every layer's ``Attention`` is
class-swapped to take the plan's mask; it calls mlx-vlm's own ``__call__`` with it
(a re-implementation runs only when tracing the attention share). The tower has no
[CLS]: methods that read [CLS] attention get the attention each token receives in the
last vision block (``tower_attention``). The Qwen3-VL and Qwen3.5 adapters reuse
these pieces.
"""

import sys

import mlx.core as mx

from ..core import calibration as cal
from ..core.types import Segment
from .contract import ReducedLayout, RopeFrequencies, VisionOutput, whole_picture
from .llava import first_layer_input, token_runs  # noqa: F401
from .patching import (
    attend,
    language_layers,
    nothing_after_layer,
    patch_language_model,
    project_qkv,
    unpatch_language_model,
)
from .tower_attention import received_attention

NAMES = ("qwen2_vl", "qwen2_5_vl")
# Continuous batching follows this family's rows (adapters.batching, tested).
BATCHABLE = True


class _Attention:
    def __call__(
        self, x, mask=None, cache=None, position_ids=None, position_embeddings=None
    ):
        plan = self._restore.plan
        if plan is not None:
            mask = plan.mask(self._restore_layer, mask)
            if plan.trace is not None:
                return self._traced(
                    plan, x, mask, cache, position_ids, position_embeddings
                )
        return super().__call__(x, mask, cache, position_ids, position_embeddings)

    def _traced(self, plan, x, mask, cache, position_ids, position_embeddings):
        # mlx-vlm's attention, step by step, to read the last query's attention weights.
        q, k, v = self._restore_qkv(x)
        q, k = mrope(self, q, k, cache, position_ids, position_embeddings)
        return attend(self, plan, q, k, v, mask, cache)

    def _restore_qkv(self, x):
        """Queries, keys and values [B, heads, L, D] before RoPE."""
        q, k, v, _ = project_qkv(self, x)
        return q, k, v


def mrope(attn, q, k, cache, position_ids, position_embeddings):
    """Queries and keys rotated as mlx-vlm's Qwen attention rotates them."""
    B, _, L, _ = q.shape
    if position_ids is None:
        offset = cache.offset if cache is not None else 0
        position_ids = mx.tile(mx.arange(offset, offset + L)[None, None], (3, B, 1))
    if position_embeddings is None:
        return attn.rotary_emb.apply_rotary(q, k, position_ids, unsqueeze_dim=1)
    lang = sys.modules[type(attn)._restore_base.__module__]
    cos, sin = position_embeddings
    return lang.apply_multimodal_rotary_pos_emb(q, k, cos, sin, unqueeze_dim=1)


def patch(model, state):
    """Swap the language model's and attention layers' classes; no weight changes."""
    patch_language_model(model, state, _Attention)


unpatch = unpatch_language_model
layers = language_layers
after_layer = nothing_after_layer


def rope_frequencies(model) -> RopeFrequencies:
    """The LM's M-RoPE frequencies, each on the axis of its section."""
    return mrope_frequencies(layers(model)[0].self_attn.rotary_emb)


def mrope_frequencies(rotary) -> RopeFrequencies:
    """The rotated frequencies of an mlx-vlm M-RoPE module and the axis of each, as its
    own position selector assigns them (chunked or interleaved sections; a partial
    rotary module has frequencies only for its rotated dimensions)."""
    thetas = rotary.inv_freq.astype(mx.float32)
    selector = getattr(rotary, "position_selector", None)
    if selector is None:
        return RopeFrequencies(
            thetas, cal.mrope_axes(rotary.mrope_section, thetas.shape[0])
        )
    return RopeFrequencies(thetas, [int(a) for a in selector.tolist()])


def image_spans(model, input_ids):
    """The runs of image tokens in ``input_ids`` [1, T], one per image."""
    return token_runs(input_ids, model.config.image_token_id)


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] after the merger, the merged (h, w) grid and, when
    ``need_cls`` names a method that reads [CLS] attention, its substitute (the tower
    has no [CLS]): the attention each token receives in the last vision block."""
    thw = image_grid(sample)
    tower = model.vision_tower
    dtype = tower.patch_embed.proj.weight.dtype
    with received_attention(tower, thw, need_cls) as received:
        features = tower(pixel_values.astype(dtype), thw, output_hidden_states=False)
    segments = image_segments(model, thw)
    grid = segments[0].grid if len(segments) == 1 else None
    return VisionOutput(features[None], grid, received.value, segments)


def image_grid(sample) -> mx.array:
    """The (t, h, w) patch grid [I, 3] of the prompt's images."""
    thw = sample.get("image_grid_thw")
    if thw is None:
        raise ValueError("Qwen image prompts need image_grid_thw (processor output)")
    return thw


def image_segments(model, thw) -> tuple:
    """One segment per image of ``thw`` [I, 3] rows (t, h, w), on its merged (h, w)
    grid (None for video)."""
    merge = model.config.vision_config.spatial_merge_size
    segments, offset = [], 0
    for i, (t, h, w) in enumerate(thw.tolist()):
        n = t * (h // merge) * (w // merge)
        grid = (h // merge, w // merge) if t == 1 else None
        segments.append(Segment(offset, n, grid, image=i))
        offset += n
    return tuple(segments)


def cached_image_features(features):
    """``features`` [1, N, D] in the form mlx-vlm's Qwen merge takes them as
    ``cached_image_features``: [N, D], the tower's own output has no batch axis."""
    return features[0]


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower
    (Qwen2-VL has no other per-token arrays: ``extra`` is empty)."""
    return {"cached_image_features": cached_image_features(features)}


def full_positions(model, input_ids, sample):
    """Unreduced (t, h, w) positions [3, T] from mlx-vlm's own ``get_rope_index``."""
    positions, _ = model.language_model.get_rope_index(
        input_ids, sample.get("image_grid_thw")
    )
    return positions[:, 0, :].astype(mx.int32)


def layout(model, request) -> ReducedLayout:
    """The reduced prompt: ids, (t, h, w) positions, rope_deltas, generate kwargs."""
    sample, cols = request.sample, request.columns
    ids = sample["input_ids"][:, cols]
    P = ids.shape[1]
    if request.original_positions:
        full = full_positions(model, sample["input_ids"], sample)
        positions = full[:, cols]
        delta = int(mx.max(full).item()) + 1 - P
    else:
        positions = mx.broadcast_to(mx.arange(P, dtype=mx.int32)[None], (3, P))
        delta = 0
    kwargs = {
        "pixel_values": sample["pixel_values"],
        **image_kwargs(model, request.features, request.extra),
        "position_ids": positions[:, None, :],
        "rope_deltas": mx.array([[delta]]),
    }
    return ReducedLayout(ids, positions, kwargs)


def run_layer(model, layer, h, positions):
    """One LM layer on the full prompt without cache (for in-LLM scoring)."""
    return layer(h, "causal", None, positions[:, None, :], None)


def queries_keys(model, layer, x, positions):
    """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and pre-RoPE keys [B, T, Hkv*D]."""
    attn = layer.self_attn
    q, k, _, raw = project_qkv(attn, x)
    q, k = attn.rotary_emb.apply_rotary(q, k, positions[:, None, :], unsqueeze_dim=1)
    return q, k, raw


# Each image is one view, stretched over the whole picture.
segment_boxes = whole_picture
