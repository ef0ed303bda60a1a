"""Scores the reducers read, computed through an architecture adapter.

``grid`` and ``cls_attention`` come from the vision side (``adapter.encode``);
``text_attention`` (FastV) and ``keys`` (DART) from a scoring pre-pass through the
first language-model layers on the full, unreduced prompt.
"""

import mlx.core as mx

from ..errors import UnsupportedMethod
from .contract import layer_kinds
from .patching import has_attention, pre_attention_norm

# In-LLM reducers (FastV, DART) score with the attention of this LM layer (1-based: the
# second layer), from a pre-pass over the full prompt through the layers before it.
LLM_SCORE_LAYER = 2


def score_names(reducer) -> tuple:
    """The score keywords a ``REDUCERS`` entry reads, required or optional."""
    names = ("scores", "needs", "optional")
    return tuple(n for attr in names for n in getattr(reducer, attr, ()))


def method_scores(model, adapter, sample, need, encoded, slots):
    """The per-token score keywords a method reads (``need``), computed only when it
    reads them; ``encoded`` is the prompt's ``EncodedImage``, ``slots`` [N] the prompt
    index of each visual token. Grids come with each segment, not from here."""
    scores = {}
    if "cls_attention" in need:
        scores["cls_attention"] = encoded.cls
    if "seed" in need:
        scores["seed"] = 0
    if "text_attention" in need or "keys" in need:
        attn, keys = llm_scores(
            model, adapter, sample, encoded.features, slots, encoded.extra
        )
        if "text_attention" in need:
            scores["text_attention"] = attn
        if "keys" in need:
            scores["keys"] = keys
    return scores


def score_layer(layers) -> int:
    """Index of the layer whose attention scores: layer ``LLM_SCORE_LAYER`` (1-based),
    or on a hybrid stack the first softmax-attention layer from there on (linear
    attention and convolutions have no attention weights to read)."""
    first = min(LLM_SCORE_LAYER, len(layers)) - 1
    for i in range(first, len(layers)):
        if has_attention(layers[i]):
            return i
    raise UnsupportedMethod(
        "in-LLM scores (fastv, dart) need a softmax-attention layer at or after layer "
        f"{LLM_SCORE_LAYER} and this language model has none; use divprune or tome"
    )


def llm_scores(model, adapter, sample, features, slots, extra=None):
    """FastV/DART scores from a pre-pass of the full prompt through the layers before
    ``score_layer``: the last token's attention to each image token in that layer
    (mean over heads, within the layer's sliding window where it has one) and its
    pre-RoPE image keys. What the LM adds between layers (Qwen3-VL's deepstack levels,
    from the encoder's ``extra``) is added as the LM adds it.
    Costs those layers once more on the unreduced prompt; the real prefill then runs
    the reduced prompt through every layer, so the cache stays uniform."""
    ids = sample["input_ids"]
    kwargs = {k: v for k, v in sample.items() if k not in ("input_ids", "pixel_values")}
    cached = adapter.cached_image_features(features)
    embeds = model.get_input_embeddings(
        ids, sample["pixel_values"], cached_image_features=cached, **kwargs
    ).inputs_embeds
    positions = adapter.full_positions(model, ids, sample)
    layers = adapter.layers(model)
    k = score_layer(layers)
    h = adapter.first_layer_input(model, embeds)
    for i, layer in enumerate(layers[:k]):
        h = adapter.run_layer(model, layer, h, positions)
        h = adapter.after_layer(model, i, h, slots, extra or {})
    layer = layers[k]
    q, keys, raw = adapter.queries_keys(
        model, layer, pre_attention_norm(layer)(h), positions
    )
    H = q.shape[1]
    keys = mx.repeat(keys, H // keys.shape[1], axis=1)
    logits = (q[:, :, -1:] * layer.self_attn.scale) @ keys.swapaxes(-1, -2)
    logits = _outside_window_masked(logits, _window(adapter, model, k))
    attn = mx.softmax(logits.astype(mx.float32), axis=-1).mean(axis=1)[:, 0]
    return attn[:, slots], raw[:, slots]


def _window(adapter, model, index):
    """The sliding window of LM layer ``index`` in keys, or None."""
    kinds, of_layer = layer_kinds(adapter.rope_frequencies(model))
    return kinds[0 if of_layer is None else of_layer[index]].window


def _outside_window_masked(logits, window):
    """The last query's logits [.., T] with the keys its window cannot see at -inf
    (a key is seen while it is fewer than ``window`` tokens back, as mlx-vlm's
    mask counts)."""
    T = logits.shape[-1]
    if window is None or window >= T:
        return logits
    return mx.where(mx.arange(T) >= T - window, logits, -mx.inf)
