"""Blockwise similarity: the reducers that no longer form an N x N matrix pick what the
full-matrix versions picked, to the index."""

import mlx.core as mx
import pytest

from restore_mlx import reduce
from restore_mlx.core import mergers, pruners
from restore_mlx.core.api import REDUCERS, Reducer
from restore_mlx.core.ops import (
    Tokens,
    best_match,
    cosine,
    gather_rows,
    normalize,
    top_indices,
)


def _divprune_full(x, m):
    """DivPrune as it was with the full [B, N, N] distance matrix (the oracle)."""
    sim = cosine(x)
    dist = 1.0 - 0.5 * (sim + sim.swapaxes(1, 2))
    n = x.shape[1]
    ids = mx.arange(n, dtype=mx.int32)[None, :]
    eye = mx.eye(n, dtype=mx.bool_)
    picks = [mx.argmax(mx.min(mx.where(eye, mx.inf, dist), axis=-1), axis=-1)]
    chosen = ids == picks[0][:, None]
    near = gather_rows(dist, picks[0][:, None].astype(mx.int32))[:, 0]
    for _ in range(1, m):
        nxt = mx.argmax(mx.where(chosen, -mx.inf, near), axis=-1).astype(mx.int32)
        picks.append(nxt)
        chosen = chosen | (ids == nxt[:, None])
        near = mx.minimum(near, gather_rows(dist, nxt[:, None])[:, 0])
        mx.eval(near, chosen)
    return mx.stack(picks, axis=1).astype(mx.int32)


def _x(n, d=24, b=1, seed=0):
    return mx.random.normal((b, n, d), key=mx.random.key(seed))


@pytest.mark.parametrize("n, m, block", [(5, 3, 2), (60, 30, 7), (300, 75, 16),
                                         (300, 299, 64), (700, 80, 256)])  # fmt: skip
def test_divprune_picks_match_the_full_matrix_in_order(n, m, block):
    x = _x(n, seed=n)
    want = _divprune_full(x, m)[0].tolist()
    assert pruners.greedy_max_min(normalize(x)[0], m, block=block).tolist() == want


@pytest.mark.parametrize("n", [40, 530])
def test_divprune_selection_matches_for_a_batch(n):
    x = _x(n, b=2, seed=7)
    m = n // 4
    got = pruners.select_divprune(Tokens(x), m, {})
    assert mx.array_equal(got, mx.sort(_divprune_full(x, m), axis=1)).item()


def test_divprune_keeps_one_of_two_duplicates_only_when_it_must():
    x = _x(20, seed=3)
    x = mx.concatenate([x, x[:, :5]], axis=1)  # 5 exact duplicates
    picks = pruners.greedy_max_min(normalize(x)[0], 20, block=4).tolist()
    assert len(set(picks)) == 20
    assert picks == _divprune_full(x, 20)[0].tolist()


@pytest.mark.parametrize("n", [9, 600])
def test_best_match_equals_the_full_similarity(n):
    x = _x(n, seed=n)
    a, b = x[:, 0::2], x[:, 1::2]
    best, arg = best_match(a, b, block=32)
    sim = cosine(a, b)
    assert mx.array_equal(arg, mx.argmax(sim, axis=-1)).item()
    assert mx.allclose(best, mx.max(sim, axis=-1), atol=1e-6).item()


def _best_match_full(a, b, block=None):
    sim = cosine(a, b)
    return mx.max(sim, axis=-1), mx.argmax(sim, axis=-1).astype(mx.int32)


def _select_divprune_full(tok, m, scores):
    return mx.sort(_divprune_full(tok.x, m), axis=1)


@pytest.mark.parametrize("method", ["divprune", "tome", "vispruner"])
@pytest.mark.parametrize("restore", [False, True])
@pytest.mark.parametrize("n", [300, 729])
def test_reduce_matches_the_full_matrix_reducers(method, restore, n, monkeypatch):
    x = _x(n, seed=11)
    cls = mx.softmax(_x(n, d=1, seed=12)[..., 0], axis=-1)
    got = reduce(x, method, keep=0.3, restore=restore, cls_attention=cls)
    monkeypatch.setattr(mergers, "best_match", _best_match_full)
    monkeypatch.setattr(pruners, "best_match", _best_match_full)
    full = Reducer(select=_select_divprune_full)
    monkeypatch.setitem(REDUCERS, "divprune", full)
    want = reduce(x, method, keep=0.3, restore=restore, cls_attention=cls)
    for name in ("positions", "assignment", "sizes", "merged"):
        assert mx.array_equal(getattr(got, name), getattr(want, name)).item(), name


@pytest.mark.parametrize("rule", ["reference", "classic"])
@pytest.mark.parametrize("n, k, block", [(5, 2, 2), (300, 75, 16), (300, 150, 64),
                                         (700, 80, 256)])  # fmt: skip
def test_anchor_pass_matches_the_full_matrix(n, k, block, rule):
    from restore_mlx.core.anchors import anchors_blockwise, anchors_from_similarity

    x = _x(n, b=2, seed=n + k)
    x = mx.concatenate([x, x[:, :7]], axis=1)  # duplicates: densities tie exactly
    got = anchors_blockwise(x, k, rule, block=block)
    want = anchors_from_similarity(cosine(x), k, rule)
    for a, b in zip(got, want):
        assert mx.array_equal(a, b).item()


@pytest.mark.parametrize("method, restore", [("anchors", False), ("divprune", True),
                                             ("uniform", True)])  # fmt: skip
def test_reduce_switches_to_the_blockwise_anchor_pass_above_the_threshold(
    method, restore, monkeypatch
):
    from restore_mlx.core import anchors

    x = _x(324, seed=5)
    want = reduce(x, method, keep=0.25, restore=restore, grid=(18, 18))
    calls = []
    blockwise = anchors.anchors_blockwise
    monkeypatch.setattr(anchors, "BLOCKWISE_ABOVE", 100)
    monkeypatch.setattr(
        anchors, "anchors_blockwise", lambda *a, **kw: calls.append(a) or blockwise(*a)
    )
    got = reduce(x, method, keep=0.25, restore=restore, grid=(18, 18))
    assert calls  # the blockwise pass ran, and picked what the full matrix picked
    for name in ("positions", "assignment", "sizes", "merged"):
        assert mx.array_equal(getattr(got, name), getattr(want, name)).item(), name


def _holov_full(tok, m, scores):
    """holov as it was with the full [B, N, N] similarity (the oracle)."""
    from restore_mlx.core.spatial import _CROPS_PER_SIDE, _bins

    x, (h, w), att = tok.x, scores["grid"], scores["cls_attention"]
    ch, cw = min(h, _CROPS_PER_SIDE), min(w, _CROPS_PER_SIDE)
    crop = mx.array((_bins(h, ch)[:, None] * cw + _bins(w, cw)[None, :]).reshape(-1))
    onehot = (crop[:, None] == mx.arange(ch * cw)[None, :]).astype(mx.float32)
    same = crop[:, None] == crop[None, :]
    sim = mx.where(same, cosine(x), 0.0)
    count = mx.sum(onehot, axis=0) ** 2
    mean = (mx.sum(sim, axis=-1) @ onehot) / count
    var = mx.maximum((mx.sum(sim * sim, axis=-1) @ onehot) / count - mean * mean, 0.0)
    att_share = (att @ onehot) / mx.maximum(mx.sum(att, axis=-1, keepdims=True), 1e-12)
    var_share = var / mx.maximum(mx.sum(var, axis=-1, keepdims=True), 1e-12)
    weight = 0.5 * (att_share + var_share) + 1e-6
    idx = mx.arange(x.shape[1])
    ahead = same & (
        (att[:, None, :] > att[:, :, None])
        | ((att[:, None, :] == att[:, :, None]) & (idx[None, :] < idx[:, None]))
    )
    rank = mx.sum(ahead, axis=-1).astype(mx.float32)
    priority = (rank + 0.5) / mx.take(weight, crop, axis=1)
    return top_indices(-priority, m)


@pytest.mark.parametrize("side, m", [(3, 2), (18, 81), (27, 200), (27, 700), (40, 90)])
def test_holov_per_crop_matches_the_full_matrix(side, m):
    from restore_mlx.core.spatial import select_holov

    n = side * side
    x = _x(n, b=2, seed=side + m)
    att = mx.softmax(_x(n, d=1, b=2, seed=m)[..., 0], axis=-1)
    att = mx.concatenate([att[:, : n // 2], att[:, : n - n // 2]], axis=1)  # ties
    scores = {"grid": (side, side), "cls_attention": att}
    got = select_holov(Tokens(x), m, scores)
    assert mx.array_equal(got, _holov_full(Tokens(x), m, scores)).item()
