"""internvl (the Hugging Face transformers layout, ``InternVLForConditionalGeneration``)
in mlx-vlm 0.7.10.

The prompt is laid out as in ``internvl_chat`` (``<img>`` + 256 ``<IMG_CONTEXT>`` per
tile + ``</img>``, tiles then a thumbnail, one segment per tile: ``adapters.internvl``
holds the tile logic), but the modules differ: an InternViT ``vision_tower`` that
returns (hidden, states), a ``multi_modal_projector``, and mlx-vlm's Qwen3 language
model, whose attention always applies q/k RMSNorm before its RoPE (named ``rope``).

mlx-vlm's ``get_input_embeddings`` for this type ignores ``cached_image_features``
(it always runs the tower), so the model is class-swapped too: with cached features
it scatters them at the image tokens exactly as mlx-vlm scatters the tower's output;
without, it is mlx-vlm's own code. The attention is class-swapped to apply RoPE at
the plan's per-token positions and the plan's mask.
"""

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import UnsupportedArchitecture
from . import internvl
from .contract import RopeFrequencies, VisionOutput
from .llava import first_layer_input, full_positions, nn_rope_frequencies, token_runs
from .patching import (
    attend,
    language_layers,
    model_and_attention_patch,
    normed_qkv,
    normed_queries_keys,
    nothing_after_layer,
)

NAMES = ("internvl",)
__all__ = ["first_layer_input", "full_positions"]

segment_boxes = internvl.segment_boxes
layers = language_layers
after_layer = nothing_after_layer


class _Model:
    def get_input_embeddings(self, input_ids=None, pixel_values=None, **kwargs):
        cached = kwargs.get("cached_image_features")
        if cached is None or pixel_values is None:
            return super().get_input_embeddings(input_ids, pixel_values, **kwargs)
        from mlx_vlm.models.base import InputEmbeddingsFeatures

        embeds = self.language_model.model.embed_tokens(input_ids)
        slots = np.where(np.array(input_ids) == self.config.image_token_id)[1].tolist()
        features = cached.reshape(-1, embeds.shape[-1])
        if len(slots) != features.shape[0]:
            raise ValueError(
                f"{features.shape[0]} cached image features for {len(slots)} image "
                "tokens in the prompt"
            )
        embeds[:, slots, :] = features.astype(embeds.dtype)
        return InputEmbeddingsFeatures(inputs_embeds=embeds)


class _Attention:
    def __call__(self, x, mask=None, cache=None):
        plan = self._restore.plan
        if plan is None:
            return super().__call__(x, mask, cache)
        q, k, v = normed_qkv(self, x)
        q, k = plan.apply_rope(self.rope, q), plan.apply_rope(self.rope, k)
        mask = plan.mask(self._restore_layer, mask)
        return attend(self, plan, q, k, v, mask, cache)


patch, unpatch = model_and_attention_patch(_Model, _Attention)


def rope_frequencies(model) -> RopeFrequencies:
    """The LM's 1-D RoPE frequencies (``rope``), linear scaling folded in."""
    rope = layers(model)[0].self_attn.rope
    if type(rope) is not nn.RoPE:
        raise UnsupportedArchitecture(
            f"internvl with {type(rope).__name__} RoPE scaling is not supported "
            "(default and linear RoPE are); use a checkpoint without rope_scaling "
            "or with rope_type 'linear'"
        )
    return nn_rope_frequencies(rope)


def image_spans(model, input_ids):
    """The runs of ``<IMG_CONTEXT>`` tokens in ``input_ids`` [1, T], one per image."""
    return token_runs(input_ids, model.config.image_token_id)


def tile_side(model) -> int:
    """Tokens per side of one tile after the pixel shuffle (448 / 14 * 0.5 = 16)."""
    vision = model.config.vision_config
    return int(vision.image_size // vision.patch_size * model.config.downsample_ratio)


def tile_features(model, pixel_values) -> mx.array:
    """Every tile through the tower, pixel shuffle and projector, as mlx-vlm's
    ``get_input_embeddings`` computes them: [tiles, side * side, D]."""
    from mlx_vlm.models.base import pixel_shuffle

    tower = model.vision_tower
    pixels = pixel_values[0] if pixel_values.ndim == 5 else pixel_values
    dtype = tower.embeddings.patch_embeddings.projection.weight.dtype
    hidden, _ = tower(pixels.transpose(0, 2, 3, 1).astype(dtype))
    hidden = pixel_shuffle(hidden[:, 1:], model.config.downsample_ratio)
    return model.multi_modal_projector(hidden)


def encode(model, pixel_values, sample, need_cls=None) -> VisionOutput:
    """Visual tokens [1, N, D] (every tile of every image, in prompt order) and one
    segment per tile on its own grid."""
    internvl.refuse_cls(need_cls)
    spans = image_spans(model, sample["input_ids"])
    features = tile_features(model, pixel_values)
    return internvl.tiled_output(features, tile_side(model), spans)


# The prompt is laid out and merged as in internvl_chat (the patched
# ``get_input_embeddings`` takes the same cached features).
cached_image_features = internvl.cached_image_features
image_kwargs = internvl.image_kwargs
layout = internvl.layout
run_layer = internvl.run_layer


queries_keys = normed_queries_keys
