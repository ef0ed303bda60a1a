"""Reducers that use the patch grid: ``pool`` (merging) and ``holov`` (pruning)."""

import math

import mlx.core as mx
import numpy as np

from .ops import cosine, top_indices

# HoloV-style crops: the grid is cut into at most this many crops per side.
_CROPS_PER_SIDE = 4


def _bins(length: int, count: int) -> np.ndarray:
    """Bin (0..count-1) of each of ``length`` cells split into ``count`` contiguous bins.

    Bin i spans [floor(i * length / count), floor((i + 1) * length / count)), so bins are
    disjoint, cover everything, and none is empty while count <= length.
    """
    starts = (np.arange(count) * length) // count
    return (np.searchsorted(starts, np.arange(length), side="right") - 1).astype(
        np.int32
    )


def _band_rows(m: int, h: int, w: int) -> int:
    """How many row bands a grid (h, w) is cut into to make exactly m pools."""
    target = math.sqrt(m * h / w)  # bands that keep pools about square
    lo, hi = -(-m // w), min(h, m)  # every band must fit in w columns
    exact = [r for r in range(lo, hi + 1) if m % r == 0]
    if exact:
        best = min(exact, key=lambda r: abs(math.log(r / target)))
        if abs(math.log(best / target)) <= math.log(1.5):
            return best
    return min(max(round(target), lo), hi)


def grid_partition(m: int, h: int, w: int) -> np.ndarray:
    """Labels [h * w] (int32) cutting an h x w grid into exactly m contiguous pools.

    Rows are cut into r bands; band i is cut into m // r columns, plus one for the first
    m % r bands. When r divides m this is plain adaptive average pooling to an
    (r, m / r) grid (e.g. 2 x 2 pooling for 576 -> 144); otherwise the bands differ by
    one pool, so any m in [1, h * w] is reached exactly.
    """
    r = _band_rows(m, h, w)
    row_band = _bins(h, r)
    per_band = m // r + (np.arange(r) < m % r)
    band_start = np.concatenate([[0], np.cumsum(per_band)[:-1]])
    labels = np.empty((h, w), dtype=np.int32)
    for i in range(r):  # a loop over bands (<= h), not tokens
        labels[row_band == i] = band_start[i] + _bins(w, int(per_band[i]))[None, :]
    return labels.reshape(-1)


def group_pool(tok, m, scores):
    """pool: average over exactly m contiguous grid pools (``grid_partition``)."""
    x = tok.x
    b, n, _ = x.shape
    h, w = scores["grid"]
    labels = mx.array(grid_partition(m, h, w))
    return mx.broadcast_to(labels, (b, n))


def select_holov(tok, m, scores):
    """HoloV-style: the budget spread over spatial crops by attention and diversity.

    The grid is cut into up to 4 x 4 crops. A crop's weight is the mean of its share of
    ``cls_attention`` and its share of the crops' similarity variance (variance of the
    cosine similarities between its tokens: varied content asks for more tokens).
    Seats go to crops by the Sainte-Lague divisor method on those weights (a crop's
    j-th best token by attention has priority (j + 0.5) / weight), which hands out
    exactly m tokens, never more than a crop holds.
    """
    h, w = scores["grid"]
    att = scores["cls_attention"]
    ch, cw = min(h, _CROPS_PER_SIDE), min(w, _CROPS_PER_SIDE)
    crop = (_bins(h, ch)[:, None] * cw + _bins(w, cw)[None, :]).reshape(-1)
    members = [mx.array(np.flatnonzero(crop == c).astype(np.int32))
               for c in range(ch * cw)]  # fmt: skip
    var, rank = zip(*(_crop_statistics(tok.x, att, idx) for idx in members))
    var = mx.stack(var, axis=1)
    att_share = mx.stack([mx.sum(att[:, idx], axis=-1) for idx in members], axis=1)
    att_share = att_share / mx.maximum(mx.sum(att, axis=-1, keepdims=True), 1e-12)
    var_share = var / mx.maximum(mx.sum(var, axis=-1, keepdims=True), 1e-12)
    weight = 0.5 * (att_share + var_share) + 1e-6  # every crop can still win a seat
    # Ranks come per crop in crop order; put them back in token order.
    order = mx.argsort(mx.concatenate(members))
    rank = mx.take(mx.concatenate(rank, axis=1), order, axis=1)
    priority = (rank + 0.5) / mx.take(weight, mx.array(crop), axis=1)
    return top_indices(-priority, m)


def _crop_statistics(x, att, idx):
    """(variance [B], attention rank [B, K]) of the crop of tokens ``idx`` [K]: the
    variance of the cosine similarities among its tokens (every ordered pair, self
    included) and each token's rank in it by attention (ties to the lower index). One
    crop at a time: K x K, never N x N."""
    sim = cosine(x[:, idx])
    count = idx.size**2  # pairs in the crop
    mean = mx.sum(sim, axis=(1, 2)) / count
    var = mx.maximum(mx.sum(sim * sim, axis=(1, 2)) / count - mean * mean, 0.0)
    a = att[:, idx]
    k = mx.arange(idx.size)
    ahead = (a[:, None, :] > a[:, :, None]) | (
        (a[:, None, :] == a[:, :, None]) & (k[None, :] < k[:, None])
    )
    return var, mx.sum(ahead, axis=-1).astype(mx.float32)
