"""Pruning reducers: each picks which tokens to keep, features untouched.

Every ``select_*`` function takes the tokens (``ops.Tokens``: features x [B, N, D] and
their shared similarity), a count m and the scores, and returns the kept indices [B, m]
(int32, ascending). ``cover`` does the bookkeeping: it assigns each dropped token to
the kept token it is most similar to.
"""

import mlx.core as mx

from .ops import Tokens, complement, cosine, gather_rows, top_indices

# divprune's greedy loop is evaluated in chunks so the lazy graph stays small.
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
    the token whose distance (1 - cosine) to the kept set is largest. One vectorised
    step per selection (a Python loop over the m picks, none over tokens).
    """
    n = tok.x.shape[1]
    # Symmetric, so the distances to a pick are its row (a fast contiguous gather).
    dist = 1.0 - 0.5 * (tok.sim + tok.sim.swapaxes(1, 2))
    ids = mx.arange(n, dtype=mx.int32)[None, :]
    eye = mx.eye(n, dtype=mx.bool_)
    first = mx.argmax(mx.min(mx.where(eye, mx.inf, dist), axis=-1), axis=-1)
    picks = [first.astype(mx.int32)]
    chosen = ids == picks[0][:, None]
    near = gather_rows(dist, picks[0][:, None])[:, 0]
    for t in range(1, m):
        nxt = mx.argmax(mx.where(chosen, -mx.inf, near), axis=-1).astype(mx.int32)
        picks.append(nxt)
        chosen = chosen | (ids == nxt[:, None])
        near = mx.minimum(near, gather_rows(dist, nxt[:, None])[:, 0])
        if t % _EVAL_EVERY == 0:
            mx.eval(near, chosen, *picks)
    return mx.sort(mx.stack(picks, axis=1), axis=1)


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
        best = mx.max(cosine(gather_rows(x, a), gather_rows(x, b)), axis=-1)
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
