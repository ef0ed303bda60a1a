"""idefics3 / smolvlm (SigLIP tower + pixel-shuffle connector + llama LM) in mlx-vlm
0.7.10: the only Idefics3-aware code.

An image is cut into tiles plus a global (downscaled) image; the prompt holds
``<fake_token_around_image><row_i_col_j>`` + n ``<image>`` per tile, a newline after
each row of tiles, then ``<fake_token_around_image><global-img>`` + n ``<image>``
``<fake_token_around_image>``. Every tile and the global image is a run of image tokens
and a segment of its own: the connector's pixel shuffle turns each view's (s x s)
patch grid into an (s/r x s/r) token grid, row-major. The LM is llama with a 1-D
``nn.RoPE`` whose layers sit at ``lm.layers``: positions, layout and attention are
llava's (``adapters.llava``).
"""

from dataclasses import replace

import mlx.core as mx
import numpy as np

from ..errors import UnsupportedMethod
from . import llava
from .contract import ReducedLayout, VisionOutput
from .tiles import image_processor, last_views, tile_boxes, view_segments

NAMES = ("idefics3", "smolvlm")

patch = llava.patch
unpatch = llava.unpatch
layers = llava.layers
after_layer = llava.after_layer
rope_frequencies = llava.rope_frequencies
image_spans = llava.image_spans
full_positions = llava.full_positions
run_layer = llava.run_layer
queries_keys = llava.queries_keys
first_layer_input = llava.first_layer_input


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] as idefics3 prefills them (every tile, then the global
    image), one segment per view on its token grid; no [CLS] (SigLIP has none)."""
    if need_cls:
        raise UnsupportedMethod(
            f"method {need_cls!r} needs [CLS] attention, which the "
            f"{model.config.model_type} vision tower (SigLIP) does not have; "
            "use a method without cls_attention, e.g. divprune"
        )
    views = _views(model, pixel_values, sample.get("pixel_attention_mask"))
    count, n, width = views.shape
    side = int(round(n**0.5))
    runs = image_spans(model, sample["input_ids"])
    last = last_views(sample["input_ids"], runs, side="before")  # <global-img>
    segments = view_segments([(side, n // side)] * count, [n] * count, runs, last)
    grid = segments[0].grid if count == 1 else None
    return VisionOutput(views.reshape(1, count * n, width), grid, segments=segments)


def _views(model, pixel_values, pixel_attention_mask):
    """[V, n, D] connector output per real view, computed exactly as mlx-vlm's
    ``get_input_embeddings`` computes it (all-zero padding views dropped)."""
    B, V, C, H, W = pixel_values.shape
    pixels = pixel_values.reshape(B * V, C, H, W)
    zeros = (pixels == 0.0).sum(axis=(-1, -2, -3))
    real = np.where(zeros != np.prod(pixels.shape[1:]))[0].tolist()
    pixels = pixels[real, ...]
    if pixel_attention_mask is None:
        mask = mx.ones((pixels.shape[0], H, W), dtype=mx.bool_)
    else:
        mask = pixel_attention_mask.reshape(B * V, H, W)[real]
    p = model.config.vision_config.patch_size
    rows, cols = H // p, W // p
    blocks = mask[:, : rows * p, : cols * p].reshape(-1, rows, p, cols, p)
    patch_mask = blocks.transpose(0, 1, 3, 2, 4).sum(axis=(-1, -2)) > 0
    hidden, *_ = model.vision_model(
        pixels.transpose(0, 2, 3, 1),
        patch_attention_mask=patch_mask,
        output_hidden_states=True,
    )
    return model.connector(hidden.astype(pixels.dtype))


def cached_image_features(features):
    """``features`` [1, N, D] in the form mlx-vlm's idefics3 merge takes them as
    ``cached_image_features``: [N, D], as its own tower path flattens them."""
    return features[0]


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower."""
    return {"cached_image_features": cached_image_features(features)}


def layout(model, request) -> ReducedLayout:
    """The reduced prompt (llava's: kept columns, original positions)."""
    lay = llava.layout(model, request)
    kwargs = image_kwargs(model, request.features, request.extra)
    return replace(lay, generate_kwargs={**lay.generate_kwargs, **kwargs})


def segment_boxes(model, processor, picture, segments) -> tuple:
    """Every tile over its cell of the picture (the processor stretches the picture
    to whole tiles before cutting it), the global image as the overview; rows x cols
    from the image processor's own count for this picture's size."""
    if sum(s.reducible for s in segments) == 1:
        return tile_boxes(segments, 1, 1)
    ip = image_processor(processor)
    _, rows, cols = ip.get_number_of_image_patches(picture.height, picture.width)
    return tile_boxes(segments, rows, cols)
