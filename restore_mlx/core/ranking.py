"""The "global" budget policy: the tokens of every span ranked together.

Under the default "proportional" policy a prompt's budget is split over its spans
(images, tiles) in proportion to their sizes. Under "global" a reducer ranks the
tokens of all reducible spans together and the budget lands where that ranking puts
it: every span keeps its best-ranked token (the minimum of one token per span, as
under "proportional"), and the rest of the budget goes to the best-ranked remaining
tokens, whichever span holds them. Each span is then reduced on its own with the count
that fell in it, exactly as under "proportional", so nothing merges across two images
or tiles; with RESTORE a span's count is split between its base and its anchors as
usual. With one span both policies are the same.

What "ranked together" means per reducer:

- fastv: ``text_attention`` as it is (one softmax over the whole prompt already).
- visionzip, vispruner, holov: ``cls_attention`` divided by its span's mean: each
  image's [CLS] attention is a distribution over its own tokens, so a token ranks by
  how far above its image's uniform share it is (spans of any size compare).
- dart: its pivots (largest ``keys`` norms) over all spans, then the tokens least
  similar to any pivot, whichever span the pivot lies in (similarity across images
  only chooses here, it never merges).
- divprune: the greedy max-min picks over all spans' tokens, in pick order (again the
  distances across images only choose).
- random: one random order of all the tokens (from ``seed``).
- tome: least redundant first: a token's highest cosine similarity to another token
  of its own span, lowest first (ToMe merges the most similar tokens first).
- anchors: RESTORE's anchor score rho * delta within each span, with the density rho
  divided by the span's length (a sum over the span otherwise favours large spans).
- pool, uniform: content-blind, so "proportional" (an even spread over all tokens is
  the proportional split); ``global_budgets`` falls back to it.

A reducer with none of these forms raises UnsupportedMethod.
"""

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..errors import UnsupportedMethod
from .anchors import anchor_scores, symmetric
from .ops import cosine, gather_rows, nearest_other, normalize, top_indices
from .pruners import greedy_max_min


def _attention_share(name):
    def rank(x, m, scores, owner):
        att = np.array(scores[name][0])
        counts = np.bincount(owner)
        means = np.bincount(owner, weights=att) / counts
        return np.argsort(-(att / np.maximum(means[owner], 1e-12)), kind="stable")

    return rank


def _text_attention(x, m, scores, owner):
    return np.argsort(-np.array(scores["text_attention"][0]), kind="stable")


def _divprune(x, m, scores, owner):
    return np.array(greedy_max_min(normalize(x)[0], m))


def _dart(x, m, scores, owner):
    keys = scores.get("keys", x).astype(mx.float32)
    norms = mx.sum(keys * keys, axis=-1)
    pivots = top_indices(norms, max(1, m // 8))
    near = mx.max(cosine(x, gather_rows(x, pivots)), axis=-1)
    pivot = np.zeros(x.shape[1], dtype=bool)
    pivot[np.array(pivots[0])] = True
    # Pivots first (by key norm), then the others from least similar to a pivot.
    by_norm = np.argsort(-np.array(norms[0]), kind="stable")
    others = np.argsort(np.where(pivot, np.inf, np.array(near[0])), kind="stable")
    return np.concatenate([by_norm[pivot[by_norm]], others[: len(pivot) - pivot.sum()]])


def _random(x, m, scores, owner):
    u = mx.random.uniform(shape=(x.shape[1],), key=mx.random.key(scores.get("seed", 0)))
    return np.argsort(-np.array(u), kind="stable")


def _per_span(x, owner, score):
    """score(span's tokens [1, n, D]) -> [n], gathered back over all tokens."""
    out = np.empty(x.shape[1], dtype=np.float32)
    for s in range(owner.max() + 1):
        idx = np.flatnonzero(owner == s)
        out[idx] = np.array(score(x[:, mx.array(idx.astype(np.int32))]))
    return out


def _tome(x, m, scores, owner):
    redundancy = _per_span(x, owner, lambda xs: nearest_other(normalize(xs)[0]))
    return np.argsort(redundancy, kind="stable")


def _anchors(x, m, scores, owner):
    def score(xs):
        return anchor_scores(symmetric(cosine(xs)))[0] / xs.shape[1]

    return np.argsort(-_per_span(x, owner, score), kind="stable")


RANKINGS = {
    "fastv": _text_attention,
    "visionzip": _attention_share("cls_attention"),
    "vispruner": _attention_share("cls_attention"),
    "holov": _attention_share("cls_attention"),
    "dart": _dart,
    "divprune": _divprune,
    "random": _random,
    "tome": _tome,
    "anchors": _anchors,
}
# Content-blind reducers: "global" is "proportional" for them.
PROPORTIONAL_ONLY = ("pool", "uniform")


def counts_from_order(order: Sequence[int], owner: np.ndarray, spans: int, m: int):
    """Per-span budgets summing to m from a ranking ``order`` (best first, at least m
    long) of tokens whose span is ``owner``: each span's best token, then the best
    m - spans of the others."""
    counts = [0] * spans
    extra = m - spans
    for token in order[:m]:
        s = int(owner[token])
        if counts[s] == 0:
            counts[s] = 1
        elif extra > 0:
            counts[s] += 1
            extra -= 1
    return [max(1, c) for c in counts]


def global_budgets(x, scores, owner: np.ndarray, method: str, m: int) -> list:
    """Per-span budgets for the reducible tokens x [1, U, D] of all spans (span of
    each: ``owner``), ranked together by ``method`` (see the module docstring)."""
    if method not in RANKINGS:
        raise UnsupportedMethod(
            f"budget_policy='global' has no global ranking for the {method!r} "
            "reducer; use budget_policy='proportional'"
        )
    if x.shape[0] != 1:
        raise ValueError(
            f"budget_policy='global' reduces one prompt at a time (B = 1), got B = "
            f"{x.shape[0]}; use budget_policy='proportional' for a batch"
        )
    order = RANKINGS[method](x, m, scores, owner)
    return counts_from_order(order, owner, int(owner.max()) + 1, m)
