"""What each reducer picks, on inputs where the answer is known."""

import mlx.core as mx
import numpy as np
import pytest

from restore_mlx import reduce

B, N, D = 2, 16, 8


def _x(seed=0, b=B, n=N, d=D):
    return np.random.default_rng(seed).normal(size=(b, n, d)).astype(np.float32)


def _att(seed=1, b=B, n=N):
    return np.random.default_rng(seed).random((b, n)).astype(np.float32)


def _kept(red):
    """Positions of the tokens the base kept (not produced by anchor merging)."""
    p, m = np.array(red.positions), np.array(red.merged)
    return [sorted(p[row][~m[row]].tolist()) for row in range(p.shape[0])]


def _top(score, k):
    return [sorted(np.argsort(-s, kind="stable")[:k].tolist()) for s in score]


def test_fastv_keeps_top_text_attention():
    x, att = _x(), _att()
    red = reduce(
        mx.array(x), "fastv", tokens=6, restore=False, text_attention=mx.array(att)
    )
    assert _kept(red) == _top(att, 6)
    red = reduce(mx.array(x), "fastv", tokens=6, text_attention=mx.array(att))
    assert _kept(red) == _top(att, 3)  # RESTORE: the base keeps M - M // 2


def test_vispruner_keeps_the_important_half():
    x, att = _x(), _att()
    red = reduce(
        mx.array(x), "vispruner", tokens=7, restore=False, cls_attention=mx.array(att)
    )
    for row, top in enumerate(_top(att, 4)):  # ceil(7 / 2) important tokens
        assert set(top) <= set(_kept(red)[row])


def test_vispruner_diverse_tokens_drop_duplicates():
    x = _x(b=1)
    x[0, 4:] = np.repeat(
        _x(seed=5, b=1, n=6)[0], 2, axis=0
    )  # 4,5 equal; 6,7 equal; ...
    att = np.zeros((1, N), np.float32)
    att[0, :4] = 1.0  # tokens 0..3 are the important ones
    red = reduce(
        mx.array(x), "vispruner", tokens=8, restore=False, cls_attention=mx.array(att)
    )
    kept = _kept(red)[0]
    assert kept[:4] == [0, 1, 2, 3]
    diverse = x[0, kept[4:]]
    assert len(np.unique(diverse, axis=0)) == 4


def test_visionzip_dominant_alone_context_merged():
    x, att = _x(), _att()
    red = reduce(
        mx.array(x), "visionzip", tokens=8, restore=False, cls_attention=mx.array(att)
    )
    sizes, pos = np.array(red.sizes), np.array(red.positions)
    for row, top in enumerate(_top(att, 7)):  # 8 - round(8 * 10 / 64) dominant tokens
        singles = sorted(pos[row][sizes[row] == 1].tolist())
        assert set(top) <= set(singles)
        assert sizes[row].max() == N - 7  # one contextual target took all the rest
    red = reduce(mx.array(x), "visionzip", tokens=8, cls_attention=mx.array(att))
    assert _kept(red) == _top(att, 4)  # RESTORE keeps the dominant tokens


def test_uniform_is_evenly_strided():
    red = reduce(mx.array(_x()), "uniform", tokens=4, restore=False)
    assert (np.array(red.positions) == [2, 6, 10, 14]).all()


def test_random_depends_on_seed_only():
    x = mx.array(_x())
    a = reduce(x, "random", tokens=5, restore=False, seed=1)
    b = reduce(x, "random", tokens=5, restore=False, seed=1)
    c = reduce(x, "random", tokens=5, restore=False, seed=2)
    assert mx.array_equal(a.positions, b.positions).item()
    assert not mx.array_equal(a.positions, c.positions).item()


def test_tome_merges_parallel_pairs():
    x = _x()
    x[:, 1::2] = 2.0 * x[:, 0::2]  # token 2i + 1 points the same way as token 2i
    red = reduce(mx.array(x), "tome", tokens=8)
    want = np.repeat(np.arange(8), 2)
    assert (np.array(red.assignment) == want).all()
    np.testing.assert_allclose(np.array(red.features), 1.5 * x[:, 0::2], rtol=1e-5)
    assert (np.array(red.positions) == np.arange(0, N, 2)).all()  # lower median


def _greedy_divprune(x, m):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1 - xn @ xn.T
    picks = [int(np.argmax(np.where(np.eye(len(x), dtype=bool), np.inf, dist).min(1)))]
    while len(picks) < m:
        near = dist[:, picks].min(axis=1)
        near[picks] = -np.inf
        picks.append(int(np.argmax(near)))
    return sorted(picks)


@pytest.mark.parametrize("m", [1, 3, 9])
def test_divprune_matches_greedy_max_min(m):
    x = _x(seed=4)
    red = reduce(mx.array(x), "divprune", tokens=m, restore=False)
    assert _kept(red) == [_greedy_divprune(x[row], m) for row in range(B)]


def test_dart_pivot_then_least_similar():
    x = _x(seed=6)
    keys = _x(seed=7, d=3)
    red = reduce(mx.array(x), "dart", tokens=6, restore=False, keys=mx.array(keys))
    xn = x / np.linalg.norm(x, axis=-1, keepdims=True)
    for row in range(B):
        pivot = int(np.argmax((keys[row] ** 2).sum(-1)))  # 6 // 8 -> one pivot
        sim = xn[row] @ xn[row, pivot]
        sim[pivot] = np.inf
        want = sorted([pivot, *np.argsort(sim, kind="stable")[:5].tolist()])
        assert _kept(red)[row] == want
    default = reduce(mx.array(x), "dart", tokens=6, restore=False)
    same = reduce(mx.array(x), "dart", tokens=6, restore=False, keys=mx.array(x))
    assert mx.array_equal(default.positions, same.positions).item()


def test_holov_spreads_seats_evenly_over_equal_crops():
    crop = _x(seed=8, b=1, n=4)[0].reshape(2, 2, D)
    grid = np.tile(crop, (4, 4, 1))  # 8 x 8 grid: 16 identical 2 x 2 crops
    att_crop = np.array([[0.1, 0.4], [0.3, 0.2]], np.float32)
    att = np.tile(att_crop, (4, 4)).reshape(1, 64)
    x = mx.array(grid.reshape(1, 64, D))
    red = reduce(x, "holov", tokens=16, restore=False, cls_attention=mx.array(att))
    kept = np.array(_kept(red)[0])
    assert ((kept // 8) % 2 == 0).all() and (
        (kept % 8) % 2 == 1
    ).all()  # each crop's 0.4


def test_holov_gives_attended_crop_more_seats():
    x = mx.array(_x(seed=9, b=1, n=64))
    att = np.full((1, 64), 0.01, np.float32)
    att[0, [0, 1, 8, 9]] = 1.0  # the top-left 2 x 2 crop draws the attention
    red = reduce(x, "holov", tokens=20, restore=False, cls_attention=mx.array(att))
    kept = np.array(_kept(red)[0])
    assert {0, 1, 8, 9} <= set(kept.tolist())


def test_half_precision_features_keep_their_dtype():
    x = mx.array(_x()).astype(mx.bfloat16)
    for method in ("tome", "divprune", "anchors"):
        red = reduce(x, method, tokens=5)
        assert red.features.dtype == mx.bfloat16
    assert mx.array_equal(reduce(x, "tome", keep=1.0).features, x).item()
