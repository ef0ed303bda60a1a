"""internvl_chat (InternViT + pixel shuffle + MLP, qwen2-style LM) in mlx-vlm 0.7.10.

Each image is ``<img>`` + 256 ``<IMG_CONTEXT>`` tokens per tile + ``</img>``: up to 12
tiles of the resized image, then a thumbnail of the whole image when there are several.
Each tile (and the thumbnail) is its own 16 x 16 patch grid, hence one segment each:
spatial reducers work per tile, nothing merges across tiles, the budget of the whole
prompt is split over the tiles in proportion (all equal here).

Positions are 1-D: the attention module applies ``nn.RoPE`` (named ``rotary_emb``)
after a per-head RMSNorm of queries and keys when the projections have no bias. The
attention is class-swapped to apply RoPE at the plan's per-token positions and the
plan's mask; the language model drops the caller's mask and builds its own.
"""

import mlx.core as mx

from ..core.types import Segment
from ..errors import UnsupportedMethod
from .contract import ReducedLayout, RopeFrequencies, VisionOutput
from .llava import (
    first_layer_input,
    full_positions,
    nn_rope_frequencies,
    positioned_layout,
    token_runs,
)
from .patching import (
    attend,
    language_layers,
    nothing_after_layer,
    patch_language_model,
    unpatch_language_model,
)
from .tiles import tile_boxes

NAMES = ("internvl_chat",)
__all__ = ["first_layer_input", "full_positions"]


def project(attn, x: mx.array):
    """Queries [B, H, L, D], keys and values [B, Hkv, L, D] before RoPE, q/k norm
    applied as mlx-vlm's InternVL attention applies it, and the pre-RoPE keys
    [B, L, Hkv*D] (normed)."""
    B, L, _ = x.shape
    q = attn.q_proj(x).reshape(B, L, attn.n_heads, attn.head_dim)
    k = attn.k_proj(x).reshape(B, L, attn.n_kv_heads, attn.head_dim)
    if attn._use_qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    v = attn.v_proj(x).reshape(B, L, attn.n_kv_heads, attn.head_dim)
    raw = k.reshape(B, L, -1)
    return (
        q.transpose(0, 2, 1, 3),
        k.transpose(0, 2, 1, 3),
        v.transpose(0, 2, 1, 3),
        raw,
    )


class _Attention:
    def __call__(self, x, mask=None, cache=None):
        plan = self._restore.plan
        if plan is None:
            return super().__call__(x, mask, cache)
        q, k, v, _ = project(self, x)
        q = plan.apply_rope(self.rotary_emb, q)
        k = plan.apply_rope(self.rotary_emb, k)
        mask = plan.mask(self._restore_layer, mask)
        return attend(self, plan, q, k, v, mask, cache)


def patch(model, state):
    """Swap the language model's and attention layers' classes; no weight changes."""
    patch_language_model(model, state, _Attention)


unpatch = unpatch_language_model
layers = language_layers
after_layer = nothing_after_layer


def rope_frequencies(model) -> RopeFrequencies:
    """The LM's 1-D RoPE frequencies (``rotary_emb``), linear scaling folded in."""
    return nn_rope_frequencies(layers(model)[0].self_attn.rotary_emb)


def image_spans(model, input_ids):
    """The runs of ``<IMG_CONTEXT>`` tokens in ``input_ids`` [1, T], one per image."""
    return token_runs(input_ids, model.config.image_token_index)


def tile_side(model) -> int:
    """Tokens per side of one tile after the pixel shuffle (448 / 14 * 0.5 = 16)."""
    vision = model.config.vision_config
    return int(vision.image_size // vision.patch_size * model.downsample_ratio)


def tile_features(model, pixel_values) -> mx.array:
    """Every tile through the tower, pixel shuffle and MLP, as mlx-vlm's merge
    computes them: [tiles, side * side, D]."""
    from mlx_vlm.models.base import pixel_shuffle

    dtype = model.vision_model.embeddings.patch_embedding.weight.dtype
    pixels = pixel_values.astype(dtype)
    if pixels.ndim == 5:
        pixels = pixels[0]
    hidden, _, _ = model.vision_model(
        pixels.transpose(0, 2, 3, 1), output_hidden_states=True
    )
    hidden = pixel_shuffle(hidden[:, 1:, :], shuffle_ratio=model.downsample_ratio)
    for layer in model.mlp1:
        hidden = layer(hidden)
    return hidden


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] (every tile of every image, in prompt order) and one
    segment per tile on its own grid."""
    refuse_cls(need_cls)
    spans = image_spans(model, sample["input_ids"])
    return tiled_output(tile_features(model, pixel_values), tile_side(model), spans)


def refuse_cls(need_cls) -> None:
    """UnsupportedMethod when a method reads [CLS] attention (not read from InternViT)."""
    if need_cls:
        raise UnsupportedMethod(
            f"method {need_cls!r} needs [CLS] attention, which restore_mlx does not "
            "read from the InternViT tower; use a method without cls_attention, "
            "e.g. divprune"
        )


def tiled_output(features, side: int, spans) -> VisionOutput:
    """``features`` [tiles, side * side, D] as the prompt's visual tokens [1, N, D]
    with one (side, side) segment per tile of the image runs ``spans``."""
    segments = tile_segments([s.length for s in spans], side)
    n = sum(s.length for s in spans)
    if features.shape[0] * side * side != n:
        raise ValueError(
            f"{features.shape[0]} tiles of {side * side} tokens but {n} image tokens "
            "in the prompt"
        )
    grid = (side, side) if len(segments) == 1 else None
    return VisionOutput(features.reshape(1, n, -1), grid, segments=segments)


def tile_segments(run_lengths, side: int) -> tuple:
    """One (side, side) segment per tile of each image's run of ``run_lengths``."""
    tile, segments, offset = side * side, [], 0
    for image, length in enumerate(run_lengths):
        for _ in range(length // tile):
            segments.append(Segment(offset, tile, (side, side), image=image))
            offset += tile
    return tuple(segments)


def cached_image_features(features):
    """``features`` [1, N, D] as mlx-vlm's InternVL merge takes them (it flattens)."""
    return features


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower."""
    return {"cached_image_features": cached_image_features(features)}


def layout(model, request) -> ReducedLayout:
    """The reduced prompt: ids, prompt positions, decode shift, generate kwargs."""
    return positioned_layout(
        request, image_kwargs(model, request.features, request.extra)
    )


def run_layer(model, layer, h, positions):
    """One LM layer on the full prompt without cache (for in-LLM scoring)."""
    return layer(h, "causal", None)


def queries_keys(model, layer, x, positions):
    """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and pre-RoPE keys [B, T, Hkv*D]."""
    attn = layer.self_attn
    q, k, _, raw = project(attn, x)
    return attn.rotary_emb(q), attn.rotary_emb(k), raw


def segment_boxes(model, processor, picture, segments) -> tuple:
    """Every tile over the region of the picture it was cut from (the arrangement
    mlx-vlm's processor picks for this picture's aspect ratio), the thumbnail as the
    overview; a lone tile is the whole picture."""
    tiles = sum(s.reducible for s in segments)
    if tiles == 1:
        return tile_boxes(segments, 1, 1)
    ip = getattr(processor, "image_processor", None)
    thumbnail = getattr(ip, "dynamic_use_thumbnail", True)
    cols, rows = tile_arrangement(picture.size, tiles - int(thumbnail), ip)
    return tile_boxes(segments, rows, cols)


def tile_arrangement(picture_size, count: int, image_processor=None) -> tuple:
    """(cols, rows) of the ``count`` tiles mlx-vlm's InternVL processor cuts a picture
    of ``picture_size`` (width, height) into, as its ``dynamic_preprocess`` picks."""
    cols, rows = tile_grid(picture_size, image_processor)
    if cols * rows != count:
        width, height = picture_size
        raise ValueError(
            f"{count} tiles in the prompt, but the processor would cut a "
            f"{width}x{height} picture into {cols}x{rows}"
        )
    return cols, rows


def tile_grid(picture_size, image_processor=None) -> tuple:
    """(cols, rows) of the tiles mlx-vlm's InternVL processor cuts a picture of
    ``picture_size`` (width, height) into (defaults: 1 to 12 tiles of 448 px)."""
    from mlx_vlm.models.internvl_chat.processor import find_closest_aspect_ratio

    ip = image_processor
    low = getattr(ip, "dynamic_min_num", 1)
    high = getattr(ip, "dynamic_max_num", 12)
    size = getattr(ip, "size", None) or 448  # the tile side
    ratios = sorted(
        {(i, j) for n in range(low, high + 1) for i in range(1, n + 1)
         for j in range(1, n + 1) if low <= i * j <= high},
        key=lambda r: r[0] * r[1],
    )  # fmt: skip
    width, height = picture_size
    return find_closest_aspect_ratio(width / height, ratios, width, height, size)
