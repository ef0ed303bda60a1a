"""Shared patching helpers for adapters: class swaps, the language-model hook, and
the pieces of an mlx-vlm attention forward that every adapter's attention reuses.

Architecture independent. ``patch_language_model`` swaps the classes of the language
model and its attention modules (ToMe-style, per instance, undoable): the language
model asks the ``RestoreState`` for a plan once per forward, and each attention layer
reads it. With no plan the patched classes call straight through to mlx-vlm's code.
"""

import mlx.core as mx

from . import batching
from .batching import ROW_KWARG

_SWAPPED = {}
PATCH_ATTRS = ("_restore", "_restore_layer")


def swap_class(obj, mixin, **attrs):
    """Give ``obj`` a subclass of its class with ``mixin`` first; same parameters."""
    base = type(obj)
    if getattr(base, "_restore_base", None) is not None:
        base = base._restore_base
    key = (base, mixin)
    if key not in _SWAPPED:
        name = f"Restore{base.__name__}"
        _SWAPPED[key] = type(name, (mixin, base), {"_restore_base": base})
    obj.__class__ = _SWAPPED[key]
    for k, v in attrs.items():
        object.__setattr__(obj, k, v)


def unswap_class(obj, *attrs):
    """Undo ``swap_class``: the original class back, the extra attributes gone."""
    base = getattr(type(obj), "_restore_base", None)
    if base is not None:
        obj.__class__ = base
    for k in attrs:
        obj.__dict__.pop(k, None)


def cache_offset(cache) -> int:
    """Tokens already cached: the offset of the first layer cache that has one
    (linear-attention and conv layers' caches have none)."""
    for c in cache or ():
        if c is not None and hasattr(c, "offset"):
            return int(c.offset)
    return 0


class RestoreLanguageModel:
    """Mixin for an mlx-vlm ``LanguageModel``: computes the plan once per forward."""

    def __call__(self, inputs, inputs_embeds=None, mask=None, cache=None, **kwargs):
        state = self._restore
        length = (inputs_embeds if inputs_embeds is not None else inputs).shape[1]
        state.plan = _plan(state, inputs, length, cache, kwargs.pop(ROW_KWARG, None))
        if mask is not None:  # not every language model takes one; generate never does
            kwargs["mask"] = mask
        try:
            return super().__call__(
                inputs, inputs_embeds=inputs_embeds, cache=cache, **kwargs
            )
        finally:
            state.plan = None


def _plan(state, inputs, length, cache, rows):
    """One request (``state``), or a batch whose rows carry their own (``batching``)."""
    first = batching.first_kv_cache(cache)
    if rows is not None or batching.tagged(first):
        return batching.plan_rows(first, rows, length)
    if batching.is_batched(first):
        return None  # rows no request was prepared for: mlx-vlm's own code
    return state.begin(inputs, length, cache_offset(cache))


def text_model(model):
    """The module that holds the decoder layers, the token embeddings and the final
    norm: ``lm.model`` in most mlx-vlm language models, ``lm`` itself in idefics3."""
    lm = model.language_model
    inner = getattr(lm, "model", None)
    return inner if inner is not None and "layers" in inner else lm


def nothing_after_layer(model, index, h, slots, extra):
    """``after_layer`` of the LMs that add nothing to the hidden states between
    layers: ``h`` unchanged."""
    return h


def language_layers(model):
    """The decoder layers of an mlx-vlm model's language model."""
    return text_model(model).layers


def final_norm(model) -> tuple:
    """(owner, attribute name) of the language model's final norm: ``norm`` in most
    models, ``embedding_norm`` in lfm2 (whose name says where HF keeps it)."""
    owner = text_model(model)
    return owner, "norm" if "norm" in owner else "embedding_norm"


def has_attention(layer) -> bool:
    """Whether a decoder layer mixes tokens with softmax attention (``self_attn``);
    hybrid models (lfm2's short convolutions) have other mixers in other layers."""
    return "self_attn" in layer


def attention_layers(layers) -> list:
    """The layers with softmax attention, in order."""
    return [layer for layer in layers if has_attention(layer)]


def pre_attention_norm(layer):
    """The norm a decoder layer applies before its attention: ``input_layernorm``
    (llama, qwen, idefics3) or ``operator_norm`` (lfm2)."""
    return layer.input_layernorm if "input_layernorm" in layer else layer.operator_norm


def patch_language_model(model, state, attention_mixin, layers=language_layers):
    """Swap the classes of the language model and of every attention module.

    Attention modules are numbered in order among the attention layers only: the
    calibration's "layer 0" (uniform sizes) is the first layer that attends.
    """
    swap_class(model.language_model, RestoreLanguageModel, _restore=state)
    for i, layer in enumerate(attention_layers(layers(model))):
        swap_class(layer.self_attn, attention_mixin, _restore=state, _restore_layer=i)


def unpatch_language_model(model, layers=language_layers):
    """Undo ``patch_language_model``."""
    unswap_class(model.language_model, *PATCH_ATTRS)
    for layer in attention_layers(layers(model)):
        unswap_class(layer.self_attn, *PATCH_ATTRS)


def model_and_attention_patch(model_mixin, attention_mixin):
    """(``patch``, ``unpatch``) of a family whose model class is swapped too (its
    image merge takes the reduced features) besides the language model and attention."""

    def patch(model, state):
        """Swap the model's, language model's and attention layers' classes."""
        patch_language_model(model, state, attention_mixin)
        swap_class(model, model_mixin)

    def unpatch(model):
        """Undo ``patch``."""
        unpatch_language_model(model)
        unswap_class(model)

    return patch, unpatch


def rope_at(rope, x: mx.array, positions: mx.array) -> mx.array:
    """Apply ``rope`` (an ``nn.RoPE``) to x [B, H, L, D] at per-token ``positions`` [L].

    ``mx.fast.rope`` takes one offset per batch row, so the token axis moves into the
    batch axis: every token is its own row of length 1 at its own offset. On contiguous
    positions this equals the plain call to the bit.
    """
    B, H, L, D = x.shape
    rows = x.transpose(0, 2, 1, 3).reshape(B * L, H, 1, D)
    offsets = mx.tile(positions.astype(mx.int32), (B,))
    out = mx.fast.rope(
        rows,
        rope.dims,
        traditional=rope.traditional,
        base=rope.base,
        scale=rope.scale,
        offset=offsets,
    )
    return out.reshape(B, L, H, D).transpose(0, 2, 1, 3)


def project_qkv(attn, x: mx.array):
    """An mlx-vlm attention module's queries [B, H, L, D], keys and values
    [B, Hkv, L, D] and pre-RoPE keys [B, L, Hkv*D], before RoPE."""
    B, L, _ = x.shape
    raw = attn.k_proj(x)
    q = attn.q_proj(x).reshape(B, L, attn.n_heads, -1).transpose(0, 2, 1, 3)
    k = raw.reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    v = attn.v_proj(x).reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    return q, k, v, raw


def normed_qkv(attn, x: mx.array):
    """Queries [B, H, L, D], keys and values [B, Hkv, L, D] before RoPE, with the
    per-head q/k RMSNorm (``q_norm``/``k_norm``) that Gemma 3's and Qwen3's attention
    apply first."""
    q, k, v, _ = project_qkv(attn, x)
    return attn.q_norm(q), attn.k_norm(k), v


def normed_queries_keys(model, layer, x, positions):
    """``queries_keys`` of a q/k-normed attention with 1-D RoPE named ``rope``
    (Gemma 3, Qwen3 LMs): RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and the
    normed pre-RoPE keys [B, T, Hkv*D], at the prompt's own contiguous positions."""
    attn = layer.self_attn
    q, k, _ = normed_qkv(attn, x)
    B, _, T, _ = k.shape
    raw = k.transpose(0, 2, 1, 3).reshape(B, T, -1)
    return attn.rope(q), attn.rope(k), raw


def attend(attn, plan, q, k, v, mask, cache) -> mx.array:
    """The rest of an mlx-vlm attention after RoPE: cache update, trace, SDPA with the
    plan's mask, output projection."""
    if cache is not None:
        k, v = cache.update_and_fetch(k, v)
    return attend_fetched(attn, plan, q, k, v, mask, cache)


def attend_fetched(attn, plan, q, k, v, mask, cache, keys=None) -> mx.array:
    """``attend`` once the cache has returned its keys and values (``keys`` their
    prompt indices where the cache reorders them, see ``cache_key_order``)."""
    from mlx_vlm.models.base import scaled_dot_product_attention

    B, _, L, _ = q.shape
    plan.observe(q, k, mask, attn.scale, keys)
    out = scaled_dot_product_attention(q, k, v, cache, scale=attn.scale, mask=mask)
    project = attn.o_proj if "o_proj" in attn else attn.out_proj  # lfm2: out_proj
    return project(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


def cache_key_order(cache, num_keys: int):
    """The index in the whole sequence of each of the ``num_keys`` keys a cache just
    returned, in the cache's order; None when they are simply ``0..num_keys-1``.

    A ``RotatingKVCache`` (sliding-window layers) returns its last keys in time order
    while prefilling and, once decoding wraps, a ring buffer whose slot ``_idx - 1``
    holds the newest key: slot ``s`` then holds key ``offset - 1 - ((_idx - 1 - s) mod
    (num_keys - keep))``, which is also the time order in the other cases."""
    from mlx_vlm.models.cache import RotatingKVCache

    if not isinstance(cache, RotatingKVCache):
        return None
    end, newest = cache.offset, cache._idx - 1
    if end == num_keys and newest == num_keys - 1:
        return None
    keep = cache.keep  # the first ``keep`` slots hold the first keys for good
    slots = mx.arange(num_keys, dtype=mx.int32)
    ring = end - 1 - ((newest - slots) % (num_keys - keep))
    return mx.where(slots < keep, slots, ring)


class RopeAttention:
    """Mixin for an mlx-vlm attention with a 1-D ``nn.RoPE`` (``rope``) and
    ``q_proj``/``k_proj``/``v_proj``/``o_proj``: with a plan, RoPE at the plan's
    positions and the plan's mask; without one, mlx-vlm's own ``__call__``."""

    def __call__(self, x, mask=None, cache=None):
        plan = self._restore.plan
        if plan is None:
            return super().__call__(x, mask, cache)
        q, k, v, _ = project_qkv(self, x)
        q, k = plan.apply_rope(self.rope, q), plan.apply_rope(self.rope, k)
        mask = plan.mask(self._restore_layer, mask)
        return attend(self, plan, q, k, v, mask, cache)
