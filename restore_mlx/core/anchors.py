"""Distinctive anchor merging (RESTORE step 2): density-peak anchors, then nearest anchor."""

import mlx.core as mx

from ..config import ANCHOR_RULES
from .ops import cosine, top_indices


def anchor_scores(sim: mx.array, rule: str = "reference") -> mx.array:
    """The anchor score rho * delta [B, N] from cosine similarities ``sim`` [B, N, N].

    rho_i = sum_j S_ij (self included). "reference" (the authors' code):
    delta_i = 1 - max S_ij over the tokens j LESS dense than i, and 1 for a token with
    none. "classic" density peaks: delta_i = 1 - max S_ij over the DENSER tokens j, and
    1 - min_j S_ij (the largest distance) for a token with none.
    """
    if rule not in ANCHOR_RULES:
        raise ValueError(f"anchor_rule must be one of {ANCHOR_RULES}, got {rule!r}")
    rho = mx.sum(sim, axis=-1)
    if rule == "reference":
        other = rho[:, None, :] < rho[:, :, None]  # other[b, i, j]: j less dense than i
    else:
        other = rho[:, None, :] > rho[:, :, None]
    # Similarities are >= -1, so -2 never wins a max; rows with no candidate keep -2.
    best = mx.max(mx.where(other, sim, -2.0), axis=-1)
    fallback = 0.0 if rule == "reference" else mx.min(sim, axis=-1)
    delta = 1.0 - mx.where(best > -2.0, best, fallback)
    return rho * delta


def anchor_merge(x: mx.array, k: int, rule: str = "reference"):
    """Merge the tokens x [B, N, D] into ``k`` anchors.

    Returns (anchors [B, k] int32 ascending, labels [B, N] int32 in [0, k)): the top-k
    tokens by ``anchor_scores`` sorted by index, and for every token the anchor it is most
    cosine-similar to (each anchor joins itself). The merged feature is the members'
    (size-weighted) mean, computed by the caller from ``labels``.
    """
    return anchors_from_similarity(cosine(x), k, rule)


def symmetric(sim: mx.array) -> mx.array:
    """Similarities sim [B, N, N] made exactly symmetric with a unit diagonal, so tied
    densities (e.g. duplicate tokens) tie exactly instead of by the matmul's rounding.
    """
    n = sim.shape[-1]
    return mx.where(mx.eye(n, dtype=mx.bool_), 1.0, 0.5 * (sim + sim.swapaxes(1, 2)))


def anchors_from_similarity(sim: mx.array, k: int, rule: str = "reference"):
    """``anchor_merge`` given the tokens' cosine similarities sim [B, N, N]."""
    n = sim.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"anchor count must be in [1, {n}], got {k}")
    sim = symmetric(sim)
    anchors = top_indices(anchor_scores(sim, rule), k)
    to_anchor = mx.take_along_axis(sim, anchors[:, None, :], axis=2)
    labels = mx.argmax(to_anchor, axis=-1).astype(mx.int32)
    # An anchor always joins its own group, even if another anchor is a tie at 1.0.
    own = mx.broadcast_to(mx.arange(k, dtype=mx.int32), anchors.shape)
    labels = mx.put_along_axis(labels, anchors, own, axis=1)
    return anchors, labels
