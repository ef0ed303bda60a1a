"""Merging reducers: each returns group labels [B, N] in 0..m-1 (features are means)."""

import mlx.core as mx

from .ops import (
    best_match,
    complement,
    cosine,
    gather_rows,
    segment_mean,
    top_indices,
)

# VisionZip's published split: 54 dominant + 10 contextual tokens out of 64.
_CONTEXT_SHARE = 10 / 64


def _tome_round(x, labels, n, r):
    """One bipartite soft matching round: merge r groups of set A into set B.

    Groups alternate between A (even labels) and B (odd). Each A group finds its most
    similar B group; the r best-matched A groups merge into theirs. Surviving groups
    keep their relative order, so the alternation stays spatial in later rounds.
    """
    b = x.shape[0]
    feats = segment_mean(x, labels, n)  # size-weighted means of the current groups
    best, partner = best_match(feats[:, 0::2], feats[:, 1::2])
    na = best.shape[1]
    dst = 2 * partner + 1  # label of the B partner
    merged_a = 2 * top_indices(best, r)  # labels of merging A groups
    keep = mx.put_along_axis(
        mx.ones((b, n), dtype=mx.int32), merged_a, mx.zeros_like(merged_a), axis=1
    )
    new_label = mx.cumsum(keep, axis=1) - 1
    evens = mx.broadcast_to(2 * mx.arange(na, dtype=mx.int32), (b, na))
    target = mx.put_along_axis(
        mx.broadcast_to(mx.arange(n, dtype=mx.int32), (b, n)), evens, dst, axis=1
    )
    remap = mx.where(keep > 0, new_label, mx.take_along_axis(new_label, target, axis=1))
    return mx.take_along_axis(remap, labels, axis=1)


def group_tome(tok, m, scores):
    """ToMe: bipartite soft matching rounds on cosine similarity until m groups remain.

    Each round merges at most half the groups, so it takes about log2(N / m) rounds.
    """
    x = tok.x
    b, n, _ = x.shape
    labels = mx.broadcast_to(mx.arange(n, dtype=mx.int32), (b, n))
    while n > m:
        r = min((n + 1) // 2, n - m)
        labels = _tome_round(x, labels, n, r)
        n -= r
    return labels


def select_visionzip(tok, m, scores):
    """VisionZip's dominant tokens: the m with the largest ``cls_attention``."""
    return top_indices(scores["cls_attention"], m)


def group_visionzip(tok, m, scores):
    """VisionZip: dominant tokens by [CLS] attention plus merged contextual tokens.

    About 10/64 of the budget (at least 1) is contextual: targets evenly strided over
    the non-dominant tokens, each other non-dominant token merged into its most
    cosine-similar target. Dominant tokens stay alone.
    """
    x = tok.x
    b, n, _ = x.shape
    n_ctx = max(1, round(m * _CONTEXT_SHARE))
    n_dom = m - n_ctx
    dom = select_visionzip(tok, n_dom, scores) if n_dom else mx.zeros((b, 0), mx.int32)
    rest = complement(dom, n)
    n_rest = rest.shape[1]
    slots = (mx.arange(n_ctx, dtype=mx.int32) * n_rest) // n_ctx
    targets = mx.take(rest, slots, axis=1)
    near = mx.argmax(cosine(gather_rows(x, rest), gather_rows(x, targets)), axis=-1)
    near = near.astype(mx.int32)
    own = mx.broadcast_to(mx.arange(n_ctx, dtype=mx.int32), (b, n_ctx))
    near = mx.put_along_axis(near, mx.broadcast_to(slots, (b, n_ctx)), own, axis=1)
    labels = mx.zeros((b, n), dtype=mx.int32)
    if n_dom:
        dom_own = mx.broadcast_to(mx.arange(n_dom, dtype=mx.int32), dom.shape)
        labels = mx.put_along_axis(labels, dom, dom_own, axis=1)
    return mx.put_along_axis(labels, rest, n_dom + near, axis=1)
