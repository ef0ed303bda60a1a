"""llava (CLIP tower + llama/qwen2 LM) in mlx-vlm 0.7.10: the only llava-aware code.

Patched by class swap: ``LanguageModel`` (plan once per forward) and every layer's
``Attention``, which re-runs mlx-vlm's attention with RoPE at the plan's per-token
positions (``rope`` only takes an int offset, so tokens move into the batch axis) and
the plan's additive mask. With no plan it calls mlx-vlm's own ``__call__``.
"""

import mlx.core as mx

from ..core import calibration as cal
from ..core.types import Segment
from ..errors import UnsupportedMethod
from .contract import (
    ImageSpan,
    ReducedLayout,
    RopeFrequencies,
    VisionOutput,
    whole_picture,
)
from .patching import (
    RopeAttention,
    language_layers,
    nothing_after_layer,
    patch_language_model,
    project_qkv,
    unpatch_language_model,
)

NAMES = ("llava",)
# Continuous batching follows this family's rows (adapters.batching, tested).
BATCHABLE = True


def patch(model, state):
    """Swap the language model's and attention layers' classes; no weight changes."""
    patch_language_model(model, state, RopeAttention)


unpatch = unpatch_language_model
layers = language_layers
after_layer = nothing_after_layer


def rope_frequencies(model) -> RopeFrequencies:
    """The LM's 1-D RoPE frequencies, linear scaling folded in."""
    return nn_rope_frequencies(layers(model)[0].self_attn.rope)


def nn_rope_frequencies(rope) -> RopeFrequencies:
    """The frequencies of an ``nn.RoPE`` (1-D), its linear scaling folded in."""
    return RopeFrequencies(cal.rope_thetas(rope.dims, rope.base, scale=rope.scale))


def image_spans(model, input_ids):
    """The runs of image tokens in ``input_ids`` [1, T], one per image."""
    return token_runs(input_ids, model.config.image_token_index)


def token_runs(input_ids, token) -> tuple:
    """Every maximal run of ``token`` in ``input_ids`` [1, T], in order."""
    runs, start = [], None
    ids = input_ids[0].tolist()
    for i, t in enumerate(ids + [None]):
        if t == token and start is None:
            start = i
        elif t != token and start is not None:
            runs.append(ImageSpan(start, i - start))
            start = None
    return tuple(runs)


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] as llava prefills them, the grid and, when ``need_cls``
    names a method that reads it, [CLS] attention [1, N]."""
    vision = model.vision_tower.vision_model
    *_, hidden = model.vision_tower(
        pixel_values.transpose(0, 2, 3, 1), output_hidden_states=True
    )
    layer = model.vision_feature_layer
    strategy = model.vision_feature_select_strategy
    picks = [layer] if isinstance(layer, int) else list(layer)
    chosen = [hidden[i][:, 1:] if strategy == "default" else hidden[i] for i in picks]
    features = model.multi_modal_projector(mx.concatenate(chosen, axis=-1))
    images, n, _ = features.shape  # one row of N tokens per image
    side = int(round(n**0.5))
    grid = (side, n // side) if side * (n // side) == n else None
    segments = tuple(Segment(i * n, n, grid, image=i) for i in range(images))
    cls = None
    if need_cls:
        cls = _cls_attention(vision, hidden, picks[0], strategy, need_cls)
        cls = cls.reshape(1, -1)
    features = features.reshape(1, images * n, -1)
    return VisionOutput(features, grid if images == 1 else None, cls, segments)


def _cls_attention(vision, hidden, layer, strategy, method):
    """Mean-over-heads attention of [CLS] to the patches in the layer that outputs the
    selected features, recomputed from the hidden state entering it (CLIP towers in
    mlx-vlm return no attention maps)."""
    if vision.embeddings.class_embedding is None or strategy != "default":
        raise UnsupportedMethod(
            f"method {method!r} needs [CLS] attention, but this llava vision tower has "
            "no [CLS] token (SigLIP or 'full' feature strategy); use a method without "
            "cls_attention, e.g. divprune"
        )
    blocks = vision.encoder.layers
    index = layer if layer >= 0 else len(hidden) + layer
    block = blocks[max(index - 1, 0)]
    h = block.layer_norm1(hidden[max(index - 1, 0)])
    attn = block.self_attn
    B, T, _ = h.shape
    q = attn.q_proj(h[:, :1]).reshape(B, 1, attn.num_heads, -1).transpose(0, 2, 1, 3)
    k = attn.k_proj(h).reshape(B, T, attn.num_heads, -1).transpose(0, 2, 1, 3)
    probs = mx.softmax((q * attn.scale) @ k.swapaxes(-1, -2), axis=-1)
    return probs.mean(axis=1)[:, 0, 1:]


def cached_image_features(features):
    """``features`` [1, N, D] in the form mlx-vlm's llava merge takes them as
    ``cached_image_features`` (as they are: batch axis included)."""
    return features


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower
    (llava has no other per-token arrays: ``extra`` is empty)."""
    return {"cached_image_features": cached_image_features(features)}


def full_positions(model, input_ids, sample):
    """Unreduced RoPE positions [T] (llava: 0..T-1)."""
    return mx.arange(input_ids.shape[1], dtype=mx.int32)


def layout(model, request) -> ReducedLayout:
    """The reduced prompt: ids, prompt positions, decode shift, generate kwargs."""
    return positioned_layout(
        request, image_kwargs(model, request.features, request.extra)
    )


def positioned_layout(request, merge: dict) -> ReducedLayout:
    """The reduced prompt of a 1-D RoPE model whose merge takes the reduced features
    through the generate kwargs ``merge``: kept columns as ids, at their original
    positions (or re-indexed)."""
    sample, cols = request.sample, request.columns
    ids = sample["input_ids"][:, cols]
    kwargs = {"pixel_values": sample["pixel_values"], **merge}
    if not request.original_positions:
        positions = mx.arange(ids.shape[1], dtype=mx.int32)
        return ReducedLayout(ids, positions, kwargs)
    n = sum(s.length for s in request.spans)
    shift = cal.decode_shift(n, request.features.shape[1])
    return ReducedLayout(ids, cols, kwargs, rope=cols, shift=shift)


def first_layer_input(model, embeds):
    """The first layer's input: the embeddings as they are."""
    return embeds


def run_layer(model, layer, h, positions):
    """One LM layer on the full prompt without cache (for in-LLM scoring)."""
    return layer(h, "causal", None)


def queries_keys(model, layer, x, positions):
    """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and pre-RoPE keys [B, T, Hkv*D]."""
    attn = layer.self_attn
    q, k, _, raw = project_qkv(attn, x)
    return attn.rope(q), attn.rope(k), raw


# Each image is one view, stretched over the whole picture.
segment_boxes = whole_picture
