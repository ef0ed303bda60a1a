"""llava_onevision (SigLIP tower + qwen2 LM, AnyRes tiling) in mlx-vlm 0.7.10.

One run of image tokens per image: the base image (``patches_per_side``^2 tokens, e.g.
27 x 27 = 729), then the AnyRes tiles stitched into one grid, unpadded to the image's
aspect ratio (and bilinearly shrunk to at most ``anyres_max_N`` tiles' worth), with an
``image_newline`` token after every row. Segments: the base image on its own grid; the
whole tile area as ONE segment on its (rows, cols) grid with the newlines stepped over
(``Segment.row_stride``), so spatial reducers see the real 2-D layout and groups can
span tile borders (the resize has already blended them); the newlines as a fixed
segment, never reduced, calibrated as text.

Positions are 1-D (qwen2 ``nn.RoPE``): the llava adapter's class-swapped attention,
RoPE at per-token positions and the plan's mask, is reused as it is. The language
model takes ``(inputs, mask, cache, inputs_embeds)`` and never forwards ``mask``.
"""

import sys

import mlx.core as mx
import numpy as np

from ..core.types import Segment
from ..errors import UnsupportedMethod
from .contract import ReducedLayout, SegmentBox, VisionOutput
from .llava import (
    first_layer_input,
    full_positions,
    positioned_layout,
    queries_keys,
    rope_frequencies,
    run_layer,
    token_runs,
)
from .patching import (
    RopeAttention,
    language_layers,
    nothing_after_layer,
    patch_language_model,
    unpatch_language_model,
)

NAMES = ("llava_onevision",)
# Shared with llava as they are: the same qwen2/llama layers and 1-D positions.
__all__ = [
    "first_layer_input", "full_positions", "queries_keys", "rope_frequencies",
    "run_layer",
]  # fmt: skip


def patch(model, state):
    """Swap the language model's and attention layers' classes; no weight changes."""
    patch_language_model(model, state, RopeAttention)


unpatch = unpatch_language_model
layers = language_layers
after_layer = nothing_after_layer


def image_spans(model, input_ids):
    """The runs of image tokens in ``input_ids`` [1, T], one per image."""
    return token_runs(input_ids, model.config.image_token_index)


def cached_image_features(features):
    """``features`` [1, N, D] as mlx-vlm's onevision merge takes them: [N, D]."""
    return features[0]


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower."""
    return {"cached_image_features": cached_image_features(features)}


def layout(model, request) -> ReducedLayout:
    """The reduced prompt: ids, prompt positions, decode shift, generate kwargs."""
    return positioned_layout(
        request, image_kwargs(model, request.features, request.extra)
    )


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] exactly as mlx-vlm packs them (base, tiles, newlines),
    and one segment each for every image's base grid, tile grid and newlines."""
    if need_cls:
        raise UnsupportedMethod(
            f"method {need_cls!r} needs [CLS] attention, but the llava_onevision "
            "vision tower (SigLIP) has no [CLS] token; use a method without "
            "cls_attention, e.g. divprune"
        )
    sizes = sample.get("image_sizes")
    if sizes is None:
        raise ValueError("llava_onevision image prompts need image_sizes (processor)")
    features = model.get_image_features(pixel_values, sizes)
    sizes = np.array(sizes).reshape(-1, 2).tolist()
    patches = _patches_per_image(model, pixel_values, sizes)
    segments, offset = [], 0
    for i, (size, count) in enumerate(zip(sizes, patches)):
        image = image_segments(model, size, count, offset, i)
        segments.extend(image)
        offset = max(s.end for s in image)
    if offset != features.shape[0]:
        raise ValueError(
            f"llava_onevision packed {features.shape[0]} visual tokens but the AnyRes "
            f"layout accounts for {offset}: unsupported mlx-vlm version?"
        )
    grid = segments[0].grid if len(segments) == 1 else None
    return VisionOutput(features[None], grid, segments=tuple(segments))


def _patches_per_image(model, pixel_values, sizes) -> list:
    """How many tower crops (base + tiles) each image has, as mlx-vlm counts them."""
    if pixel_values.ndim == 4:
        return [pixel_values.shape[0]]
    lib = _module(model)
    config = model.config
    return [
        lib.image_size_to_num_patches(
            s, config.image_grid_pinpoints, config.vision_config.image_size
        )
        for s in sizes
    ]


def tile_grid(model, size, count) -> tuple:
    """(rows, cols) of an image's unpadded, possibly shrunk tile area, computed as
    mlx-vlm's ``pack_image_features`` computes it; None for a base image alone."""
    if count <= 1:
        return None
    lib, config, side = _module(model), model.config, model.patches_per_side
    rows, cols = lib.get_anyres_image_grid_shape(
        size, config.image_grid_pinpoints, config.vision_config.image_size
    )
    shape = lib.unpad_image(mx.zeros((1, rows * side, cols * side)), size).shape[1:]
    h, w = shape
    ratio = float(np.sqrt(h * w / (model.max_num_patches * side**2)))
    if ratio > 1.1:
        h, w = int(h // ratio), int(w // ratio)
    return h, w


def image_segments(model, size, count, offset, image) -> list:
    """One image's segments from visual token ``offset``: base grid, tile grid (rows
    stepped over the newline after each), newlines (fixed)."""
    side = model.patches_per_side
    newline = model.image_newline is not None
    out = [Segment(offset, side * side, (side, side), image=image)]
    at = offset + side * side
    grid = tile_grid(model, size, count)
    if grid is None:
        if newline:
            out.append(Segment(at, 1, None, image=image, reducible=False))
        return out
    h, w = grid
    stride = w + 1 if newline else 0
    out.append(Segment(at, h * w, grid, image=image, row_stride=stride))
    if newline:
        out.append(
            Segment(at + w, h, (h, 1), image, reducible=False, row_stride=stride)
        )
    return out


def _module(model):
    # mlx-vlm's own AnyRes helpers, from the module that defines the model class.
    return sys.modules[type(model).__module__]


def segment_boxes(model, processor, picture, segments) -> tuple:
    """The AnyRes tile grid over the whole picture (unpadding leaves the picture's
    own extent, to a patch row), the base image as the overview; the base image
    alone is the picture."""
    grids = [s for s in segments if s.reducible]
    if len(grids) == 1:
        return (SegmentBox(grids[0]),)
    base, tiles = grids
    return (SegmentBox(tiles), SegmentBox(base, overview=True))
