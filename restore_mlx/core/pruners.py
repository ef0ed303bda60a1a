"""Pruning reducers: each picks which tokens to keep, features untouched.

Every ``select_*`` function takes the tokens (``ops.Tokens``: features x [B, N, D] and
their shared similarity), a count m and the scores, and returns the kept indices [B, m]
(int32, ascending). ``cover`` does the bookkeeping: it assigns each dropped token to
the kept token it is most similar to.
"""

import mlx.core as mx
import numpy as np

from .ops import (
    SIM_BLOCK,
    Tokens,
    best_match,
    complement,
    cosine,
    gather_rows,
    nearest_other,
    normalize,
    top_indices,
)

# divprune's greedy steps run ahead this many at a time between checks.
_EVAL_EVERY = 64


def cover(tok: Tokens, kept: mx.array) -> mx.array:
    """Assignment [B, N] of every token to the most cosine-similar kept token (0..m-1)."""
    labels = mx.argmax(tok.sim_to(kept), axis=-1).astype(mx.int32)
    own = mx.broadcast_to(mx.arange(kept.shape[1], dtype=mx.int32), kept.shape)
    return mx.put_along_axis(labels, kept, own, axis=1)


def select_random(tok, m, scores):
    """m tokens drawn uniformly without replacement, from ``seed`` (default 0)."""
    b, n, _ = tok.x.shape
    u = mx.random.uniform(shape=(b, n), key=mx.random.key(scores.get("seed", 0)))
    return top_indices(u, m)


def select_uniform(tok, m, scores):
    """m evenly strided tokens: the middle token of each of m equal spans of 0..N-1."""
    b, n, _ = tok.x.shape
    idx = ((2 * mx.arange(m, dtype=mx.int32) + 1) * n) // (2 * m)
    return mx.broadcast_to(idx, (b, m))


def select_fastv(tok, m, scores):
    """FastV: the m tokens the text attends to most (``text_attention`` [B, N])."""
    return top_indices(scores["text_attention"], m)


def select_divprune(tok, m, scores):
    """DivPrune: greedy max-min cosine diversity.

    Starts from the token least similar to its nearest neighbour, then repeatedly adds
    the token whose distance (1 - cosine) to the kept set is largest. Each step needs
    only the distances from the newest pick to every token, so no N x N matrix is
    formed (``greedy_max_min``).
    """
    xn = normalize(tok.x)
    picks = [greedy_max_min(xn[i], m) for i in range(xn.shape[0])]
    return mx.sort(mx.stack(picks), axis=1)


def most_isolated(xn: mx.array, block: int = SIM_BLOCK) -> mx.array:
    """The row (int32 scalar) of the unit rows xn [N, D] whose nearest other row is
    farthest (1 - cosine), the lowest on ties; O(block x N) memory."""
    return mx.argmax(1.0 - nearest_other(xn, block)).astype(mx.int32)


def greedy_max_min(xn: mx.array, m: int, block: int = SIM_BLOCK) -> mx.array:
    """DivPrune's m picks [m] (int32, in pick order) over the unit rows xn [N, D].

    A pick's distances to every token are its row of 1 - xn xn^T. Rows are formed for
    the pick and the ``block - 1`` tokens then farthest from the kept set, where the
    next picks come from; the steps run ahead on device and one check per
    ``_EVAL_EVERY`` steps finds the first pick whose row was not formed, from which
    the loop resumes with a new block. Memory is O(block x N); the picks are those
    of the full distance matrix.
    """
    n = xn.shape[0]
    ids = mx.arange(n, dtype=mx.int32)
    pick = most_isolated(xn, block)
    picks = [pick]
    near = mx.where(ids == pick, -mx.inf, mx.inf)  # kept tokens sit at -inf
    missed = True
    while len(picks) < m:
        if missed:
            rows, slot = _distance_rows(xn, near, pick, block)
        ahead = _run_ahead(rows, slot, near, pick, min(_EVAL_EVERY, m - len(picks)))
        hits = mx.stack([h for h, *_ in ahead])
        mx.eval(hits, *(s for _, s, _ in ahead))
        misses = np.flatnonzero(~np.array(hits))  # the one host read per batch
        missed = misses.size > 0
        for _, pick, near in ahead[: misses[0]] if missed else ahead:
            picks.append(pick)
    return mx.stack(picks)


def _distance_rows(xn, near, pick, block):
    """Distance rows [K, N] of ``pick`` and the tokens farthest from the kept set (by
    ``near``), and the row of each token in them ([N], -1 for none)."""
    n = xn.shape[0]
    top = mx.argsort(-near)[: block - 1].astype(mx.int32)
    cand = mx.concatenate([pick[None], top])
    slot = mx.full((n,), -1, dtype=mx.int32)
    slot[cand] = mx.arange(cand.shape[0], dtype=mx.int32)
    return 1.0 - xn[cand] @ xn.T, slot


def _run_ahead(rows, slot, near, pick, steps):
    """Up to ``steps`` greedy steps on device: (had its row, next pick, near after)
    per step; a step whose pick had no row computes garbage after it."""
    ids = mx.arange(near.shape[0], dtype=mx.int32)
    ahead = []
    for _ in range(steps):
        s = slot[pick]
        near = mx.minimum(near, mx.take(rows, mx.maximum(s, 0), axis=0))
        pick = mx.argmax(near).astype(mx.int32)
        near = mx.where(ids == pick, -mx.inf, near)
        ahead.append((s >= 0, pick, near))
    return ahead


def select_dart(tok, m, scores):
    """DART: pivots by key norm, then the tokens least similar to any pivot.

    ``max(1, m // 8)`` pivots are the tokens with the largest ``keys`` norm (``keys``
    defaults to x); the other ``m - pivots`` kept tokens are those whose highest cosine
    similarity to a pivot (on x) is lowest.
    """
    x = tok.x
    n = x.shape[1]
    keys = scores.get("keys", x).astype(mx.float32)
    p = max(1, m // 8)
    pivots = top_indices(mx.sum(keys * keys, axis=-1), p)
    if p == m:
        return pivots
    rest = complement(pivots, n)
    near = mx.max(cosine(gather_rows(x, rest), gather_rows(x, pivots)), axis=-1)
    far = mx.take_along_axis(rest, top_indices(-near, m - p), axis=1)
    return mx.sort(mx.concatenate([pivots, far], axis=1), axis=1)


def dedup(x: mx.array, cand: mx.array, m: int) -> mx.array:
    """Shrink the candidates cand [B, C] to m by removing near-duplicates, ascending.

    Each round splits the candidates alternately into two sets and drops the tokens of
    the first set that are most similar to some token of the second (bipartite, as in
    ToMe), at most half of them per round, until m remain.
    """
    while cand.shape[1] > m:
        a, b = cand[:, 0::2], cand[:, 1::2]
        r = min(a.shape[1], cand.shape[1] - m)
        best, _ = best_match(gather_rows(x, a), gather_rows(x, b))
        keep_a = mx.take_along_axis(a, top_indices(-best, a.shape[1] - r), axis=1)
        cand = mx.sort(mx.concatenate([keep_a, b], axis=1), axis=1)
    return cand.astype(mx.int32)


def select_vispruner(tok, m, scores):
    """VisPruner: ``ceil(m / 2)`` important tokens by ``cls_attention``, the rest diverse.

    The diverse tokens come from the remaining ones by similarity dedup (``dedup``).
    """
    x = tok.x
    n_imp = (m + 1) // 2
    important = top_indices(scores["cls_attention"], n_imp)
    if n_imp == m:
        return important
    diverse = dedup(x, complement(important, x.shape[1]), m - n_imp)
    return mx.sort(mx.concatenate([important, diverse], axis=1), axis=1)
