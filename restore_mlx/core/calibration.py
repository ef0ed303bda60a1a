"""Calibrated attention (RESTORE step 4): the additive biases on attention logits.

Pure ``mlx.core``, in float32 (Metal has no double precision), cast to the model
dtype at the end:

- size bias ``log s_j`` per key (ToMe's proportional attention), optionally the uniform
  ``N/n`` size for every visual key (the reference's first layer);
- RoPE decay ``c(d) = mean_k cos(d * theta_k)`` from the model's own RoPE settings, its
  M-RoPE form for (t, h, w) positions, and the distance bias ``log(2 - c(d))``;
- the additive prefill mask rows (size + distance bias fused with causal masking), the
  decode-time per-key bias vector, and the decode position shift.

Where these apply to a model (per request, per forward) is ``restore_mlx.state``.
"""

from typing import Optional, Sequence

import mlx.core as mx

NEG_INF = float("-inf")


def rope_thetas(
    head_dim: int, base: float, *, rotary_dim: Optional[int] = None, scale: float = 1.0
) -> mx.array:
    """Angular frequencies ``theta_k = scale * base^(-2k / rotary_dim)``, float32.

    ``rotary_dim`` is the rotated part of a head (partial rotary); ``scale`` is the
    position scale of linear RoPE scaling (``1 / factor``), which scales every angle.
    """
    rotary_dim = head_dim if rotary_dim is None else rotary_dim
    if rotary_dim <= 0 or rotary_dim % 2 or rotary_dim > head_dim:
        raise ValueError(
            f"rotary_dim must be even and in (0, {head_dim}], got {rotary_dim}"
        )
    if base <= 1:
        raise ValueError(f"RoPE base must be > 1, got {base}")
    exponents = mx.arange(0, rotary_dim, 2, dtype=mx.float32) / rotary_dim
    return scale / mx.power(mx.array(base, dtype=mx.float32), exponents)


def decay_table(thetas: mx.array, max_distance: int) -> mx.array:
    """``c(d)`` for ``d = 0..max_distance``: the mean RoPE cosine, ``c(0) = 1``."""
    d = mx.arange(max_distance + 1, dtype=mx.float32)
    return mx.mean(mx.cos(d[:, None] * thetas[None, :]), axis=-1)


def mrope_axes(mrope_section: Sequence[int], num_freqs: int) -> list:
    """The axis (0 = t, 1 = h, 2 = w) of each frequency in Qwen2-VL's chunked layout:
    the first ``mrope_section[0]`` frequencies follow t, the next h, the rest w."""
    if sum(mrope_section) != num_freqs:
        raise ValueError(f"mrope_section {list(mrope_section)} must sum to {num_freqs}")
    return [axis for axis, n in enumerate(mrope_section) for _ in range(n)]


def mrope_decay_tables(thetas: mx.array, axes: Sequence[int], max_distance: int):
    """Per-axis partial decay tables [3, max_distance + 1].

    ``axes[k]`` is the axis (0 = t, 1 = h, 2 = w) frequency ``k`` rotates with, as the
    model's own rotary module assigns it (chunked, interleaved...).
    ``c(dt, dh, dw) = sum_a T[a, d_a]`` with ``T[a, d] = (1/K) sum_{k in axis a} cos(d theta_k)``,
    so with ``dt = dh = dw`` it is the 1D ``c(d)``.
    """
    if len(axes) != thetas.shape[0] or not set(axes) <= {0, 1, 2}:
        raise ValueError(
            f"axes must give an axis in 0..2 for each of the {thetas.shape[0]} "
            f"frequencies, got {list(axes)}"
        )
    axes = mx.array(list(axes))
    d = mx.arange(max_distance + 1, dtype=mx.float32)
    cos = mx.cos(d[:, None] * thetas[None, :])  # [D, K]
    member = (axes[None, :] == mx.arange(3)[:, None]).astype(mx.float32)  # [3, K]
    return (member @ cos.T) / thetas.shape[0]


def decay(positions_q: mx.array, positions_k: mx.array, tables: mx.array) -> mx.array:
    """RoPE decay between every query and key position.

    1D positions ([Lq], [Lk]) with a 1D table, or (t, h, w) positions ([3, Lq], [3, Lk])
    with ``mrope_decay_tables``. Returns [Lq, Lk] float32.
    """
    if positions_q.ndim == 1:
        return tables[mx.abs(positions_q[:, None] - positions_k[None, :])]
    dist = mx.abs(positions_q[:, :, None] - positions_k[:, None, :])  # [3, Lq, Lk]
    return sum(tables[a][dist[a]] for a in range(3))


def distance_bias(positions_q, positions_k, tables) -> mx.array:
    """``log(2 - c(p_i - p_j))`` [Lq, Lk] float32: 0 at distance 0, up to ``log 2`` far away."""
    return mx.log(2.0 - decay(positions_q, positions_k, tables))


def table_for(thetas, positions: mx.array, axes=None) -> mx.array:
    """The decay table(s) long enough for the distances among ``positions``: 1D, or per
    axis for (t, h, w) positions, whose frequencies' ``axes`` must then be given."""
    span = int((mx.max(positions) - mx.min(positions)).item())
    if positions.ndim == 1:
        return decay_table(thetas, span)
    if axes is None:
        raise ValueError("(t, h, w) positions need the axis of every RoPE frequency")
    return mrope_decay_tables(thetas, axes, span)


def log_sizes(sizes: mx.array) -> mx.array:
    """Size bias ``log s`` per key, float32; 0 where the size is 1."""
    if sizes.size and mx.min(sizes).item() < 1:
        raise ValueError("token sizes must be >= 1")
    return mx.log(sizes.astype(mx.float32))


def key_sizes(num_keys: int, visual_slots: mx.array, sizes: mx.array, *, uniform=False):
    """Sizes [num_keys] float32 of a prompt: 1 for text, ``sizes`` at ``visual_slots``.

    With ``uniform`` every visual key gets ``N / n`` (total size over count), as the
    reference does in the first layer.
    """
    sizes = sizes.astype(mx.float32)
    if uniform:
        sizes = mx.broadcast_to(mx.mean(sizes), sizes.shape)
    out = mx.ones((num_keys,), dtype=mx.float32)
    out[visual_slots] = sizes
    return out


def causal_mask(
    num_queries: int, num_keys: int, offset: int = 0, window: Optional[int] = None
) -> mx.array:
    """Additive causal mask [Lq, Lk] float32: query ``i`` (at ``offset + i``) sees keys
    ``<= offset + i``; with a sliding ``window``, only the last ``window`` of them."""
    rows = mx.arange(offset, offset + num_queries)[:, None]
    cols = mx.arange(num_keys)[None, :]
    seen = cols <= rows
    if window is not None:
        seen = seen & (cols > rows - window)
    return mx.where(seen, 0.0, NEG_INF).astype(mx.float32)


def prefill_mask(
    size_bias=None,
    dist_bias=None,
    *,
    offset=0,
    num_keys=None,
    window=None,
    dtype=mx.float32,
):
    """Additive prefill mask rows for queries ``offset..num_keys-1`` over keys
    ``0..num_keys-1``: size bias per key + distance bias, fused with causal masking
    (and a sliding ``window`` counted in keys, when given).

    ``size_bias`` [>= num_keys] (``log s``) and ``dist_bias`` [num_keys - offset,
    num_keys] are each optional. Built per prefill chunk, so the memory is that of the
    chunk's rows, never [P, P]; every element is the same arithmetic as a one-shot build.
    """
    if num_keys is None:
        num_keys = size_bias.shape[0] if size_bias is not None else dist_bias.shape[1]
    mask = causal_mask(num_keys - offset, num_keys, offset, window)
    if size_bias is not None:
        mask = mask + size_bias[None, :num_keys]
    if dist_bias is not None:
        mask = mask + dist_bias
    return mask.astype(dtype)


def decode_bias(size_bias: mx.array, length: int, dtype=mx.float32) -> mx.array:
    """Per-key bias [length] at decode: the prompt keys' ``log s``, 0 for generated keys."""
    prompt = size_bias.shape[0]
    if length < prompt:
        raise ValueError(
            f"decode length {length} is shorter than the prompt ({prompt})"
        )
    return mx.pad(size_bias.astype(dtype), (0, length - prompt))


def decode_shift(num_visual: int, num_kept: int) -> int:
    """How far decode positions move past the cache offset: the removed tokens, ``N - n``."""
    if not 0 < num_kept <= num_visual:
        raise ValueError(f"kept tokens must be in 1..{num_visual}, got {num_kept}")
    return num_visual - num_kept
