"""Per-model RESTORE state and the per-forward plan the patched attention layers read.

Architecture independent. ``apply`` hangs one ``RestoreState`` on the model and swaps
the classes of the language model and its attention modules (``swap_class``). Each
forward of the language model asks the state for a ``Plan`` (once, not per layer):
the RoPE positions of this chunk, the bias mask of each layer, and whether to trace.
With no plan the patched classes call straight through to mlx-vlm's own code.
"""

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from ..core import calibration as cal


@dataclass
class Prompt:
    """One prepared request: the reduced prompt as it is prefilled and cached.

    ``ids`` [1, P] reduced input ids; ``rope`` [P] int32 RoPE positions where mlx-vlm
    would not get them right by itself (llava with original positions), else None;
    ``shift`` how far decode positions move past the cache offset; ``masks`` the
    additive prefill masks [P, P] (layer 0, later layers) or None; ``sizes`` the
    decode-time per-key bias vectors [P] (layer 0, later layers) or None;
    ``visual`` [P] bool, True at visual tokens (for the attention trace).
    """

    ids: mx.array
    rope: Optional[mx.array] = None
    shift: int = 0
    masks: Optional[tuple] = None
    sizes: Optional[tuple] = None
    visual: Optional[mx.array] = None

    @property
    def length(self) -> int:
        return self.ids.shape[1]


@dataclass
class Plan:
    """What the attention layers do in one forward of the language model."""

    rope: object = None  # None: mlx-vlm's own positions; int offset or [L] positions
    masks: Optional[tuple] = None  # (layer 0, later layers), each [L, S] additive
    trace: Optional[list] = None  # visual attention share per layer, when tracing
    visual: Optional[mx.array] = None  # [S] bool, keys that are visual

    def mask(self, layer: int, given):
        """The mask layer ``layer`` uses: the RESTORE bias, or the caller's own."""
        if self.masks is None:
            return given
        return self.masks[0] if layer == 0 else self.masks[1]

    def apply_rope(self, rope, x: mx.array) -> mx.array:
        """RoPE at this plan's positions with the layer's own ``nn.RoPE`` settings."""
        if not isinstance(self.rope, mx.array):
            return rope(x, offset=self.rope)
        return rope_at(rope, x, self.rope)

    def observe(self, q, k, mask, scale):
        """Trace: the last query's attention share on visual keys, mean over heads."""
        if self.trace is not None:
            self.trace.append(visual_share(q, k, mask, scale, self.visual))


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


def visual_share(q, k, mask, scale, visual) -> mx.array:
    """Share [B] of the last query's (calibrated) softmax mass on visual keys."""
    H, S = q.shape[1], k.shape[2]
    k = mx.repeat(k, H // k.shape[1], axis=1) if k.shape[1] != H else k
    logits = (q[:, :, -1:, :].astype(mx.float32) * scale) @ k.astype(
        mx.float32
    ).swapaxes(-1, -2)
    if isinstance(mask, mx.array):
        logits = logits + mask[..., -1:, :S].astype(mx.float32)
    probs = mx.softmax(logits, axis=-1)[:, :, 0, :]  # [B, H, S]
    on_visual = mx.pad(visual, (0, max(0, S - visual.shape[0])))[:S]
    return mx.sum(probs * on_visual, axis=-1).mean(axis=1)


class RestoreState:
    """The RESTORE state of one patched model: its config and the current request."""

    def __init__(self, config):
        self.config = config
        self.prompt: Optional[Prompt] = None
        self.plan: Optional[Plan] = None
        self.trace: Optional[list] = None
        self._live = self._checked = False
        self._decode = None  # decode bias vectors, grown on demand

    def set_prompt(self, prompt: Optional[Prompt]):
        """Start a new request (None: run unpatched until the next one)."""
        self.prompt, self.plan, self._decode = prompt, None, None
        self._live = self._checked = False

    def begin(self, inputs, length: int, offset: int) -> Optional[Plan]:
        """The plan for one forward of ``length`` tokens after ``offset`` cached ones."""
        p = self.prompt
        if p is None:
            return None
        if offset == 0 or not self._checked:
            # A new prefill (or the first forward after a reused cache prefix): is it
            # the prepared prompt? One host sync per request keeps a stale state from
            # biasing an unrelated prompt.
            self._checked = True
            end = offset + length
            self._live = (
                inputs is not None
                and end <= p.length
                and inputs.shape[-1] == length
                and bool(mx.array_equal(inputs, p.ids[:, offset:end]).item())
            )
        if not self._live:
            return None
        if (
            p.rope is None
            and p.masks is None
            and p.sizes is None
            and self.trace is None
        ):
            return None
        return Plan(
            rope=self._rope(offset, length),
            masks=self._masks(offset, length),
            trace=self.trace,
            visual=p.visual,
        )

    def _rope(self, offset, length):
        p = self.prompt
        if p.rope is None:
            return offset + (p.shift if offset >= p.length else 0)
        end = offset + length
        if end <= p.length:
            return p.rope[offset:end]
        if offset >= p.length:
            return offset + p.shift
        tail = mx.arange(p.length, end, dtype=mx.int32) + p.shift
        return mx.concatenate([p.rope[offset:], tail])

    def _masks(self, offset, length):
        p = self.prompt
        end = offset + length
        if end <= p.length:
            if p.masks is None:
                return None
            return tuple(m[offset:end, :end] for m in p.masks)
        if offset >= p.length:
            # Decode: only the size bias applies (DESIGN.md section 1, step 4).
            return None if p.sizes is None else self._decode_rows(offset, end)
        if p.sizes is None and p.masks is None:
            return None
        decode = self._decode_rows(p.length, end)
        # A chunk that crosses the end of the prompt (not done by mlx-vlm's generate).
        head = self._masks(offset, p.length - offset)
        dtype = decode[0].dtype
        if head is None:
            head = (
                cal.causal_mask(p.length - offset, p.length, offset).astype(dtype),
            ) * 2
        pad = ((0, 0), (0, end - p.length))
        return tuple(
            mx.concatenate([mx.pad(h, pad, constant_values=cal.NEG_INF), d])
            for h, d in zip(head, decode)
        )

    def _decode_rows(self, start, end):
        """Decode mask rows for queries ``start..end-1``: per-key size bias (+ causal)."""
        p = self.prompt
        if p.sizes is None:
            dtype = p.masks[0].dtype
            sizes = (mx.zeros((p.length,), dtype=dtype),) * 2
        else:
            sizes = p.sizes
        if self._decode is None or self._decode[0].shape[0] < end:
            # Grow geometrically so decode slices a ready vector each step.
            capacity = max(end, 2 * p.length)
            self._decode = tuple(cal.decode_bias(s, capacity, s.dtype) for s in sizes)
        rows = tuple(v[None, :end] for v in self._decode)
        if end - start > 1:
            causal = cal.causal_mask(end - start, end, start).astype(rows[0].dtype)
            rows = tuple(r + causal for r in rows)
        return rows


def swap_class(obj, mixin, **attrs):
    """Give ``obj`` a subclass of its class with ``mixin`` first; same parameters."""
    base = type(obj)
    if getattr(base, "_restore_base", None) is not None:
        base = base._restore_base
    name = f"Restore{base.__name__}"
    key = (base, mixin)
    if key not in _SWAPPED:
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


_SWAPPED = {}


class RestoreLanguageModel:
    """Mixin for an mlx-vlm ``LanguageModel``: computes the plan once per forward."""

    def __call__(self, inputs, inputs_embeds=None, mask=None, cache=None, **kwargs):
        state = self._restore
        length = (inputs_embeds if inputs_embeds is not None else inputs).shape[1]
        offset = 0
        if cache and cache[0] is not None:
            offset = int(cache[0].offset)
        state.plan = state.begin(inputs, length, offset)
        try:
            return super().__call__(
                inputs, inputs_embeds, mask=mask, cache=cache, **kwargs
            )
        finally:
            state.plan = None


PATCH_ATTRS = ("_restore", "_restore_layer")


def patch_language_model(model, state, attention_mixin):
    """Swap the classes of the language model and of every layer's attention."""
    lm = model.language_model
    swap_class(lm, RestoreLanguageModel, _restore=state)
    for i, layer in enumerate(lm.model.layers):
        swap_class(layer.self_attn, attention_mixin, _restore=state, _restore_layer=i)


def unpatch_language_model(model):
    """Undo ``patch_language_model``."""
    lm = model.language_model
    unswap_class(lm, *PATCH_ATTRS)
    for layer in lm.model.layers:
        unswap_class(layer.self_attn, *PATCH_ATTRS)


def project_qkv(attn, x: mx.array):
    """An mlx-vlm attention module's queries [B, H, L, D], keys and values
    [B, Hkv, L, D] and pre-RoPE keys [B, L, Hkv*D], before RoPE."""
    B, L, _ = x.shape
    raw = attn.k_proj(x)
    q = attn.q_proj(x).reshape(B, L, attn.n_heads, -1).transpose(0, 2, 1, 3)
    k = raw.reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    v = attn.v_proj(x).reshape(B, L, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    return q, k, v, raw


def attend(attn, plan, q, k, v, mask, cache) -> mx.array:
    """The rest of an mlx-vlm attention after RoPE: cache update, trace, SDPA with the
    plan's mask, output projection."""
    from mlx_vlm.models.base import scaled_dot_product_attention

    B, _, L, _ = q.shape
    if cache is not None:
        k, v = cache.update_and_fetch(k, v)
    plan.observe(q, k, mask, attn.scale)
    out = scaled_dot_product_attention(q, k, v, cache, scale=attn.scale, mask=mask)
    return attn.o_proj(out.transpose(0, 2, 1, 3).reshape(B, L, -1))


def language_layers(model):
    """The decoder layers of an mlx-vlm model's language model."""
    return model.language_model.model.layers
