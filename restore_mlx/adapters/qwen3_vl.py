"""qwen3_vl / qwen3_vl_moe in mlx-vlm 0.7.10: what differs from Qwen2-VL.

Positions, the reduced layout and the attention hook are Qwen2-VL's (``adapters.qwen``):
the kept columns of the full-sequence ``get_rope_index``, decode at ``rope_deltas``, and
every layer's ``Attention`` class-swapped to take the plan's mask. Three differences:

- the rotary module is interleaved M-RoPE: each frequency's axis is read from the
  module's own position selector (``qwen.mrope_frequencies``);
- the attention applies RMSNorm to queries and keys before RoPE (attention trace and
  in-LLM scores reuse the layer's ``q_norm``/``k_norm``);
- deepstack: the tower also returns feature levels that the LM adds to the image
  positions after its first layers. ``encode`` hands them on as ``VisionOutput.extra``
  (reduced with the features' groups by the integration); mlx-vlm drops them on its
  ``cached_image_features`` path, so ``image_kwargs`` passes them back in as
  ``deepstack_visual_embeds`` (with every token kept too, else the keep-all path would
  differ from stock mlx-vlm).
"""

from . import qwen
from .contract import ReducedLayout, VisionOutput
from .patching import language_layers, normed_qkv, patch_language_model
from .tower_attention import received_attention

NAMES = ("qwen3_vl", "qwen3_vl_moe")
_DEEPSTACK = "deepstack_"


class _Attention(qwen._Attention):
    def _restore_qkv(self, x):
        return normed_qkv(self, x)


def patch(model, state):
    """Swap the language model's and attention layers' classes; no weight changes."""
    patch_language_model(model, state, _Attention)


unpatch = qwen.unpatch
layers = language_layers


def after_layer(model, index, h, slots, extra):
    """``h`` plus deepstack level ``index`` at the visual tokens ``slots``, as the
    LM adds it after its layer ``index`` (levels 0 .. L-1 after the first L layers)."""
    level = extra.get(f"{_DEEPSTACK}{index}")
    if level is None:
        return h
    return h.at[:, slots].add(level[0].astype(h.dtype))


rope_frequencies = qwen.rope_frequencies
image_spans = qwen.image_spans
cached_image_features = qwen.cached_image_features
full_positions = qwen.full_positions
segment_boxes = qwen.segment_boxes
run_layer = qwen.run_layer
first_layer_input = qwen.first_layer_input


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D], their grid, the [CLS] substitute when ``need_cls``
    names a method that reads it, and the deepstack levels as ``extra``."""
    thw = qwen.image_grid(sample)
    tower = model.vision_tower
    dtype = tower.patch_embed.proj.weight.dtype
    with received_attention(tower, thw, need_cls) as received:
        features, levels = tower(pixel_values.astype(dtype), thw)
    extra = {f"{_DEEPSTACK}{i}": level[None] for i, level in enumerate(levels)}
    segments = qwen.image_segments(model, thw)
    grid = segments[0].grid if len(segments) == 1 else None
    return VisionOutput(features[None], grid, received.value, segments, extra)


def image_kwargs(model, features, extra):
    """Generate kwargs that merge ``features`` [1, N, D] instead of running the tower,
    with the deepstack levels in ``extra`` as the LM takes them (a list of [N, D])."""
    kwargs = {"cached_image_features": cached_image_features(features)}
    levels = sorted(
        (int(name[len(_DEEPSTACK) :]), x)
        for name, x in extra.items()
        if name.startswith(_DEEPSTACK)
    )
    if levels:
        kwargs["deepstack_visual_embeds"] = [x[0] for _, x in levels]
    return kwargs


def layout(model, request) -> ReducedLayout:
    """Qwen2-VL's reduced prompt, with the reduced deepstack levels."""
    lay = qwen.layout(model, request)
    kwargs = {
        **lay.generate_kwargs,
        **image_kwargs(model, request.features, request.extra),
    }
    return ReducedLayout(lay.input_ids, lay.bias_positions, kwargs)


def queries_keys(model, layer, x, positions):
    """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and the normed pre-RoPE keys
    [B, T, Hkv*D] of ``layer``'s attention."""
    attn = layer.self_attn
    q, k, _ = normed_qkv(attn, x)
    raw = k.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1)
    q, k = attn.rotary_emb.apply_rotary(q, k, positions[:, None, :], unsqueeze_dim=1)
    return q, k, raw
