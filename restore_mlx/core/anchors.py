"""Distinctive anchor merging (RESTORE step 2): density-peak anchors, then nearest anchor."""

import mlx.core as mx

from ..config import ANCHOR_RULES
from .ops import SIM_BLOCK, Tokens, gather_rows, normalize, top_indices

# Above this many tokens the anchor pass forms its similarities SIM_BLOCK rows at a
# time (anchors_blockwise): a 6,561-token tile held 517 MB in the full-matrix pass.
BLOCKWISE_ABOVE = 2048


def anchor_scores(sim: mx.array, rule: str = "reference") -> mx.array:
    """The anchor score rho * delta [B, N] from cosine similarities ``sim`` [B, N, N].

    rho_i = sum_j S_ij (self included). "reference" (the authors' code):
    delta_i = 1 - max S_ij over the tokens j LESS dense than i, and 1 for a token with
    none. "classic" density peaks: delta_i = 1 - max S_ij over the DENSER tokens j, and
    1 - min_j S_ij (the largest distance) for a token with none.
    """
    _check_rule(rule)
    rho = mx.sum(sim, axis=-1)
    return rho * _delta(sim, rho, rho, rule)


def _check_rule(rule):
    if rule not in ANCHOR_RULES:
        raise ValueError(f"anchor_rule must be one of {ANCHOR_RULES}, got {rule!r}")


def _delta(sim_rows, rho_rows, rho, rule):
    """delta [B, R] of the R tokens whose similarity rows are ``sim_rows`` [B, R, N]
    and densities ``rho_rows`` [B, R], against every token's density ``rho`` [B, N]."""
    if rule == "reference":
        other = rho[:, None, :] < rho_rows[:, :, None]  # [b, i, j]: j less dense than i
    else:
        other = rho[:, None, :] > rho_rows[:, :, None]
    # Similarities are >= -1, so -2 never wins a max; rows with no candidate keep -2.
    best = mx.max(mx.where(other, sim_rows, -2.0), axis=-1)
    fallback = 0.0 if rule == "reference" else mx.min(sim_rows, axis=-1)
    return 1.0 - mx.where(best > -2.0, best, fallback)


def anchor_merge(x: mx.array, k: int, rule: str = "reference"):
    """Merge the tokens x [B, N, D] into ``k`` anchors.

    Returns (anchors [B, k] int32 ascending, labels [B, N] int32 in [0, k)): the top-k
    tokens by ``anchor_scores`` sorted by index, and for every token the anchor it is most
    cosine-similar to (each anchor joins itself). The merged feature is the members'
    (size-weighted) mean, computed by the caller from ``labels``.
    """
    return token_anchors(Tokens(x), k, rule)


def symmetric(sim: mx.array) -> mx.array:
    """Similarities sim [B, N, N] made exactly symmetric with a unit diagonal, so tied
    densities (e.g. duplicate tokens) tie exactly instead of by the matmul's rounding.
    """
    n = sim.shape[-1]
    return mx.where(mx.eye(n, dtype=mx.bool_), 1.0, 0.5 * (sim + sim.swapaxes(1, 2)))


def anchors_from_similarity(sim: mx.array, k: int, rule: str = "reference"):
    """``anchor_merge`` given the tokens' cosine similarities sim [B, N, N]."""
    _check_count(k, sim.shape[1])
    sim = symmetric(sim)
    anchors = top_indices(anchor_scores(sim, rule), k)
    to_anchor = mx.take_along_axis(sim, anchors[:, None, :], axis=2)
    return anchors, _joined(mx.argmax(to_anchor, axis=-1), anchors)


def _check_count(k, n):
    if not 1 <= k <= n:
        raise ValueError(f"anchor count must be in [1, {n}], got {k}")


def _joined(nearest, anchors):
    """Labels [B, N] int32 from each token's nearest anchor, with every anchor in its
    own group, even if another anchor is a tie at 1.0."""
    own = mx.broadcast_to(mx.arange(anchors.shape[1], dtype=mx.int32), anchors.shape)
    return mx.put_along_axis(nearest.astype(mx.int32), anchors, own, axis=1)


def _symmetric_rows(xn, start, block, cols=None):
    """Rows ``start .. start+block`` [B, R, C] of ``symmetric(cosine(x))`` from the
    unit rows xn [B, N, D], at the columns ``cols`` [B, C] (all N when None): each S_ij
    from the rows' product and S_ji from the columns', averaged as ``symmetric`` does.
    """
    rows = xn[:, start : start + block]
    other = xn if cols is None else gather_rows(xn, cols)
    forward = rows @ other.swapaxes(-1, -2)
    backward = (other @ rows.swapaxes(-1, -2)).swapaxes(-1, -2)
    ids = mx.arange(start, start + rows.shape[1])[None, :, None]
    col_ids = mx.arange(xn.shape[1])[None] if cols is None else cols
    return mx.where(ids == col_ids[:, None, :], 1.0, 0.5 * (forward + backward))


def anchors_blockwise(x, k: int, rule: str = "reference", block: int = SIM_BLOCK):
    """``anchor_merge`` with O(block x N) memory: the similarities are formed ``block``
    rows at a time, twice over (densities, then deltas; each pass both products that
    ``symmetric`` averages, so four times the full pass's matmul work), then each
    token's similarity to the k anchors only."""
    _check_rule(rule)
    n = x.shape[1]
    _check_count(k, n)
    xn = normalize(x)

    def per_block(fn):
        parts = []
        for start in range(0, n, block):
            parts.append(fn(start))
            mx.eval(parts[-1])  # frees the block before the next one
        return mx.concatenate(parts, axis=1)

    rho = per_block(lambda at: mx.sum(_symmetric_rows(xn, at, block), axis=-1))
    delta = per_block(
        lambda at: _delta(
            _symmetric_rows(xn, at, block), rho[:, at : at + block], rho, rule
        )
    )
    anchors = top_indices(rho * delta, k)
    nearest = per_block(
        lambda at: mx.argmax(_symmetric_rows(xn, at, block, anchors), axis=-1)
    )
    return anchors, _joined(nearest, anchors)


def token_anchors(tok, k: int, rule: str = "reference", idx=None):
    """``anchor_merge`` of the tokens ``idx`` [B, K] of ``tok`` (a ``Tokens``; all of
    them when None): sliced from its similarity matrix when that is built or the
    tokens are few, else blockwise."""
    n = tok.x.shape[1] if idx is None else idx.shape[1]
    if tok.has_sim or n <= BLOCKWISE_ABOVE:
        sim = tok.sim if idx is None else tok.sub_sim(idx)
        return anchors_from_similarity(sim, k, rule)
    x = tok.x if idx is None else gather_rows(tok.x, idx)
    return anchors_blockwise(x, k, rule)
