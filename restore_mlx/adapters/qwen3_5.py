"""qwen3_5 / qwen3_5_moe in mlx-vlm 0.7.10: a hybrid language model behind a Qwen3-VL
tower (deepstack discarded), prompts and positions as Qwen2-VL's (``adapters.qwen``).

Only the softmax-attention layers (every ``full_attention_interval``-th; 1 in 4 on the
published models) take the calibration: their ``Attention`` is class-swapped to take
the plan's mask, and the first of them is "layer 0" (the uniform ``N/n`` sizes). The
GatedDeltaNet linear-attention layers have no attention logits to bias; they read the
reduced prompt as it is. The cache offset comes from an attention layer's cache
(``patching.cache_offset`` skips the linear layers' state caches). The attention splits
a sigmoid gate off its query projection and RMS-norms q/k before partial, interleaved
M-RoPE; the attention trace and in-LLM scores reuse its own ``_prepare_projected_qkv``.
"""

import mlx.core as mx

from . import qwen, qwen3_vl
from .patching import language_layers, patch_language_model, unpatch_language_model

NAMES = ("qwen3_5", "qwen3_5_moe")


class _Attention(qwen._Attention):
    def _traced(self, plan, x, mask, cache, position_ids, position_embeddings):
        # mlx-vlm's gated attention, step by step, to read the last query's weights.
        from mlx_vlm.models.base import scaled_dot_product_attention

        B, L, _ = x.shape
        q, k, v, gate, mask = self._prepare_projected_qkv(
            self.q_proj(x), self.k_proj(x), self.v_proj(x),
            cache, position_ids, position_embeddings, mask,
        )  # fmt: skip
        plan.observe(q, k, mask, self.scale)
        out = scaled_dot_product_attention(q, k, v, cache, scale=self.scale, mask=mask)
        out = out.transpose(0, 2, 1, 3).reshape(B, L, -1)
        return self.o_proj(out * mx.sigmoid(gate))


def attention_layers(model) -> list:
    """The decoder layers with softmax attention (the others are linear attention)."""
    return [layer for layer in language_layers(model) if not layer.is_linear]


def patch(model, state):
    """Swap the language model's and the attention layers' classes; no weight changes."""
    patch_language_model(model, state, _Attention, layers=attention_layers)


def unpatch(model):
    """Undo ``patch``."""
    unpatch_language_model(model, layers=attention_layers)


def rope_frequencies(model):
    """The rotated frequencies of the attention layers' partial, interleaved M-RoPE."""
    return qwen.mrope_frequencies(attention_layers(model)[0].self_attn.rotary_emb)


layers = language_layers
after_layer = qwen3_vl.after_layer  # a no-op: this tower returns no deepstack levels
image_spans = qwen.image_spans
encode = qwen3_vl.encode  # the tower returns no deepstack levels: ``extra`` is empty
cached_image_features = qwen.cached_image_features
image_kwargs = qwen.image_kwargs
first_layer_input = qwen.first_layer_input
full_positions = qwen.full_positions
segment_boxes = qwen.segment_boxes
layout = qwen.layout


def run_layer(model, layer, h, positions):
    """One LM layer on the full prompt without cache (for in-LLM scoring)."""
    mask = None if layer.is_linear else "causal"
    return layer(h, mask, None, positions[:, None, :], None)


def queries_keys(model, layer, x, positions):
    """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and the normed pre-RoPE keys
    [B, T, Hkv*D] of an attention layer, through the layer's own projection helper."""
    attn = layer.self_attn
    B, L, _ = x.shape
    keys = attn.k_proj(x)
    q, k, _, _, _ = attn._prepare_projected_qkv(
        attn.q_proj(x), keys, attn.v_proj(x), None, positions[:, None, :], None, None
    )
    raw = attn.k_norm(keys.reshape(B, L, attn.num_key_value_heads, -1))
    return q, k, raw.reshape(B, L, -1)
