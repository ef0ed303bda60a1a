"""An independent reference for RESTORE's calibrated attention, at model level.

Nothing here imports restore_mlx's calibration or mask code: the bias is computed in
numpy from the formulas (Package.md: RESTORE, calibration), the RoPE rotation angles are read from the
model's own rotary module, and the unpatched mlx-vlm decoder layers run one by one with
an explicit additive mask each.

The reduced prompt is laid out at full length: each reduced token sits in the slot of
its original position and the removed slots are masked out as keys. The model's own
contiguous positions are then exactly RESTORE's original positions, for pruning and for
merging alike (a group sits at its median member, a real and unique index), and decode
continues at the unreduced positions.

Hybrid models cannot be laid out at full length everywhere: a linear-attention layer
or a short convolution consumes every token it is given, masked slots included. Two
forms: ``ReferenceArch.reduced`` runs the whole reference on the reduced prompt itself,
at the kept tokens' original positions, with the same bias (Qwen3.5); otherwise layers
that do not attend (``attends``) run on the reduced rows (gathered, run, scattered
back) and the attention layers at full length (LFM2). "Layer 0" is the first attention
layer.

Adding an architecture: one ``ReferenceArch`` entry in ``REFERENCE`` (how to call a
decoder layer with explicit positions and mask, how to read its RoPE angles).
"""

from dataclasses import dataclass
from typing import Callable, Optional

import mlx.core as mx
import numpy as np
import tiny_gemma3

NEG_INF = -np.inf


@dataclass(frozen=True)
class ReferenceArch:
    """How the reference drives one architecture's unpatched language model.

    ``positions(model, ids, sample, extra)`` -> RoPE positions [L] or [3, L] of the
    unreduced prompt followed by ``extra`` decode steps; ``angles(model, positions,
    i)`` -> (cos, sin) [L, K] of the rotation decoder layer ``i`` applies at each
    position, one column per rotary frequency; ``layer(model, layer, h, mask,
    positions)`` -> one decoder layer without cache (``mask`` None for a layer that
    does not attend); ``window(model, i)`` -> layer ``i``'s sliding window in cache
    slots, or None; ``inputs(model, embeds)`` -> the first layer's input (what the
    model's own forward does to the embeddings); ``additions(model, sample, prepared,
    lay, decode_steps)`` -> {layer index: [1, L, D]} added to the hidden state after
    that layer (Qwen3-VL's deepstack levels), or None; ``reduced``: the reference runs
    on the reduced prompt (hybrid models); ``parts(model)`` -> (decoder layers, token
    embedding, final norm); ``attends(layer)`` whether a layer mixes tokens by softmax
    attention (False: it runs on the reduced rows); ``merge(model, input_ids,
    features)`` -> the reduced prompt's embeddings [1, P, D] with ``features``
    [1, M, D] at its image tokens, where mlx-vlm's own merge ignores
    ``cached_image_features`` (None: mlx-vlm's merge).
    """

    positions: Callable
    angles: Callable
    layer: Callable
    window: Callable = lambda model, i: None
    inputs: Callable = lambda model, embeds: embeds
    additions: Optional[Callable] = None
    reduced: bool = False
    parts: Callable = lambda model: _lm_model_parts(model)
    attends: Callable = lambda layer: True
    merge: Optional[Callable] = None


def _lm_model_parts(model):
    inner = model.language_model.model
    return inner.layers, inner.embed_tokens, inner.norm


def _llava_positions(model, ids, sample, extra):
    return np.arange(ids.shape[1] + extra)


def _rope_angles(rope, positions):
    """cos/sin of an ``nn.RoPE``'s angles, read by rotating unit vectors with it."""
    dims, half = rope.dims, rope.dims // 2
    x = np.zeros((1, 1, 1, dims), dtype=np.float32)
    if rope.traditional:  # pairs (2k, 2k + 1)
        x[..., 0::2], cos_at, sin_at = 1.0, slice(0, dims, 2), slice(1, dims, 2)
    else:  # pairs (k, k + dims / 2)
        x[..., :half], cos_at, sin_at = 1.0, slice(0, half), slice(half, dims)
    rows = []
    for p in np.asarray(positions).tolist():
        rows.append(np.array(rope(mx.array(x), offset=int(p)))[0, 0, 0])
    rows = np.stack(rows).astype(np.float64)
    return rows[:, cos_at], rows[:, sin_at]


def _llava_angles(model, positions, i):
    return _rope_angles(model.language_model.model.layers[i].self_attn.rope, positions)


def _llava_layer(model, layer, h, mask, positions):
    return layer(h, mask, None)


def _qwen_positions(model, ids, sample, extra):
    full, _ = model.language_model.get_rope_index(ids, sample.get("image_grid_thw"))
    full = np.array(full[:, 0, :])
    tail = full.max() + 1 + np.arange(extra)
    return np.concatenate([full, np.stack([tail] * 3)], axis=1)


def _qwen_angles(model, positions, i):
    rotary = model.language_model.model.layers[i].self_attn.rotary_emb
    pos = mx.array(np.asarray(positions)[:, None, :].astype(np.int32))
    cos, sin = rotary(mx.zeros((1, 1), dtype=mx.float32), pos)
    k = rotary.inv_freq.shape[0]  # the embedding repeats the K frequencies twice
    cos = np.array(cos[0, :, :k].astype(mx.float32)).astype(np.float64)
    sin = np.array(sin[0, :, :k].astype(mx.float32)).astype(np.float64)
    return cos, sin


def _qwen_layer(model, layer, h, mask, positions):
    pos = mx.array(np.asarray(positions)[:, None, :].astype(np.int32))
    return layer(h, mask, None, pos, None)


QWEN = ReferenceArch(_qwen_positions, _qwen_angles, _qwen_layer)
REFERENCE = {
    "llava": ReferenceArch(_llava_positions, _llava_angles, _llava_layer),
    "qwen2_vl": QWEN,
    "qwen2_5_vl": QWEN,
}
REFERENCE.update(tiny_gemma3.reference_entries(ReferenceArch))
REFERENCE.update((k, ReferenceArch(**v)) for k, v in __import__("tiny_qwen3").REFERENCE.items())  # fmt: skip


def rope_decay(cos, sin, rows, cols):
    """``c(p_i - p_j) = mean_k cos(angle_k(i) - angle_k(j))`` [len(rows), len(cols)],
    from the model's own angles (any RoPE layout: 1-D, chunked or interleaved M-RoPE).
    """
    ci, si, cj, sj = cos[rows], sin[rows], cos[cols], sin[cols]
    return (ci @ cj.T + si @ sj.T) / cos.shape[1]


@dataclass
class Layout:
    """The reduced prompt laid out at full length (slots of the unreduced prompt)."""

    slots: np.ndarray  # [P] the slot of each reduced-prompt token, increasing
    visual: np.ndarray  # [P] bool, visual tokens of the reduced prompt
    sizes: np.ndarray  # [P] true sizes (1 for text)
    length: int  # unreduced prompt length T


def layout_of(prepared, spans, length) -> Layout:
    """Slots, visual flags and sizes of ``prepared`` (a restore_mlx PreparedPrompt)
    whose image runs were ``spans`` in a prompt of ``length`` tokens."""
    red = prepared.reduction
    image = np.concatenate([np.arange(s.start, s.start + s.length) for s in spans])
    kept = image[np.array(red.positions[0])]
    slots = np.sort(np.concatenate([np.setdiff1d(np.arange(length), image), kept]))
    sizes = np.ones(slots.shape[0])
    sizes[np.isin(slots, kept)] = np.array(red.sizes[0])
    # Fixed visual tokens (row separators, never reduced) count as text.
    fixed = [i for s in prepared.segments if not s.reducible for i in s.indices()]
    visual = np.isin(slots, kept) & ~np.isin(slots, image[fixed])
    return Layout(slots, visual, sizes, length)


def size_biases(lay: Layout):
    """``log s_j`` per reduced-prompt key: (layer 0 with the uniform ``N/n``, later
    layers with the true sizes)."""
    true = np.log(lay.sizes)
    uniform = np.where(lay.visual, np.log(lay.sizes[lay.visual].mean()), 0.0)
    return uniform, true


def reference_masks(
    lay: Layout, cos, sin, decode_steps, *, size=True, dist=True, window=None
):
    """Additive masks [T + k, T + k] (layer 0, later layers) over the full-length slots.

    Prompt queries see the kept prompt keys with ``log s_j + log(2 - c)``; decode
    queries see them with ``log s_j`` only, and the decoded keys with 0. Removed slots
    are never keys; their own rows see only themselves (their output is not used).
    With a sliding ``window``, a query sees only the last ``window`` keys that remain
    (the window counts cache slots of the reduced prompt, not original positions).
    """
    total = lay.length + decode_steps
    keys = np.concatenate([lay.slots, lay.length + np.arange(decode_steps)])
    causal = keys[None, :] <= keys[:, None]
    if window is not None:
        rank = np.arange(keys.shape[0])
        causal &= rank[None, :] > rank[:, None] - window
    bias = np.zeros((keys.shape[0], keys.shape[0]))
    if dist:
        c = rope_decay(cos, sin, lay.slots, lay.slots)
        bias[: lay.slots.shape[0], : lay.slots.shape[0]] += np.log(2.0 - c)
    masks = []
    for sizes in size_biases(lay):
        key_bias = np.concatenate([sizes, np.zeros(decode_steps)]) if size else 0.0
        inner = np.where(causal, bias + key_bias, NEG_INF)
        full = np.where(np.eye(total, dtype=bool), 0.0, NEG_INF)
        full[np.ix_(keys, keys)] = inner
        masks.append(full.astype(np.float32))
    return masks


def layer_masks(model, lay: Layout, positions, decode_steps, **switches):
    """One mask per decoder layer: "layer 0"'s (the first softmax-attention layer, on
    hybrid stacks too), then the later layers', each with the distance bias from that
    layer's own RoPE angles and its own window."""
    spec = REFERENCE[model.config.model_type]
    masks, calibrated = [], 0
    for i, layer in enumerate(spec.parts(model)[0]):
        cos, sin = spec.angles(model, positions, i)
        window = spec.window(model, i)
        pair = reference_masks(lay, cos, sin, decode_steps, window=window, **switches)
        masks.append(pair[0] if calibrated == 0 else pair[1])
        calibrated += "self_attn" in layer
    return masks


def head(model, h):
    """The language model's output projection (tied or not)."""
    lm = model.language_model
    if "lm_head" in lm:
        return lm.lm_head(h)
    return REFERENCE[model.config.model_type].parts(model)[1].as_linear(h)


def reference_logits(model, embeds, masks, positions, rows, additions=None):
    """Unpatched layers one by one, each with its own mask (``layer_masks``); layers
    that do not attend run on the reduced sequence ``rows`` (the slots of the reduced
    prompt and the decoded tokens); ``additions`` {layer index: [1, L, D]} are added
    after that layer."""
    spec = REFERENCE[model.config.model_type]
    layers, _, norm = spec.parts(model)
    h, rows = spec.inputs(model, embeds), mx.array(np.asarray(rows, dtype=np.int32))
    for i, (layer, mask) in enumerate(zip(layers, masks)):
        if spec.attends(layer):
            h = spec.layer(model, layer, h, mx.array(mask), positions)
        else:
            reduced = spec.layer(model, layer, h[:, rows], None, positions)
            h = mx.array(np.array(h))  # a copy, written at the reduced rows
            h[:, rows] = reduced
        if additions and i in additions:
            h = h + additions[i]
    return head(model, norm(h))


def _merged(model, prepared):
    """The reduced prompt's embeddings [1, P, D]: the reduced features merged as mlx-vlm
    merges them (or as the architecture's ``merge`` does where mlx-vlm cannot)."""
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values")
    merge = REFERENCE[model.config.model_type].merge
    if merge is not None:
        return merge(model, prepared.input_ids, kwargs["cached_image_features"])
    return model.get_input_embeddings(
        prepared.input_ids, pixels, **kwargs
    ).inputs_embeds


def full_length_embeddings(model, prepared, lay: Layout, decode_tokens):
    """The reduced prompt's embeddings (mlx-vlm's own merge of the reduced features)
    scattered into their slots, zeros in removed slots, then the decoded tokens."""
    emb = _merged(model, prepared)
    emb = np.array(emb.astype(mx.float32))[0]
    out = np.zeros((lay.length, emb.shape[-1]), dtype=np.float32)
    out[lay.slots] = emb
    embed = REFERENCE[model.config.model_type].parts(model)[1]
    tail = np.array(embed(mx.array([decode_tokens])))[0]
    return mx.array(np.concatenate([out, tail])[None])


def reduced_layout(full: Layout) -> Layout:
    """The reduced prompt as itself (slot i holds token i): the hybrid reference."""
    P = full.slots.shape[0]
    return Layout(np.arange(P), full.visual, full.sizes, P)


def reduced_embeddings(model, prepared, decode_tokens):
    """The reduced prompt's embeddings (mlx-vlm's own merge), then the decoded tokens."""
    emb = _merged(model, prepared)
    tail = REFERENCE[model.config.model_type].parts(model)[1](mx.array([decode_tokens]))
    return mx.concatenate([emb, tail.astype(emb.dtype)], axis=1)


# Architectures with their tiny models in their own test files.
from tiny_idefics3 import REFERENCE as _IDEFICS3  # noqa: E402
from tiny_lfm2_vl import REFERENCE as _LFM2_VL  # noqa: E402

REFERENCE.update({k: ReferenceArch(**f) for k, f in {**_IDEFICS3, **_LFM2_VL}.items()})

from tiny_onevision import REFERENCES as _TILED  # noqa: E402 (their own file)

REFERENCE.update({name: ReferenceArch(*spec) for name, spec in _TILED.items()})
REFERENCE.update({k: ReferenceArch(**v) for k, v in __import__("tiny_internvl").REFERENCES.items()})  # fmt: skip
