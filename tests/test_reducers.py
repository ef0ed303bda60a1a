"""Every reducer, with and without RESTORE: the invariants of a Reduction, and errors."""

import mlx.core as mx
import numpy as np
import pytest

from restore_mlx import REDUCERS, reduce

B, N, D = 2, 16, 8
PRUNERS = ("divprune", "vispruner", "holov", "fastv", "dart", "random", "uniform")
MERGERS = ("tome", "pool", "anchors")


def _inputs(n=N, seed=0, b=B, d=D):
    rng = np.random.default_rng(seed)
    x = mx.array(rng.normal(size=(b, n, d)).astype(np.float32))
    scores = dict(
        cls_attention=mx.array(rng.random((b, n)).astype(np.float32)),
        text_attention=mx.array(rng.random((b, n)).astype(np.float32)),
    )
    return x, scores


def check_invariants(x, red, m, rule="median"):
    """The contract of a Reduction, checked row by row."""
    b, n, d = x.shape
    f, s, a, p = (
        np.array(v) for v in (red.features, red.sizes, red.assignment, red.positions)
    )
    assert f.shape == (b, m, d) and s.shape == p.shape == (b, m) and a.shape == (b, n)
    assert red.merged.shape == (b, m) and red.merged.dtype == mx.bool_
    assert s.dtype == a.dtype == p.dtype == np.int32
    for row in range(b):
        assert s[row].sum() == n
        assert (s[row] >= 1).all()
        assert a[row].min() >= 0 and a[row].max() < m
        assert (np.bincount(a[row], minlength=m) == s[row]).all()
        assert p[row].min() >= 0 and p[row].max() < n
        assert (np.diff(p[row]) >= 0).all()
        if rule != "mean":
            # Each position is a member of its own group, hence strictly increasing.
            assert (a[row][p[row]] == np.arange(m)).all()
            assert (np.diff(p[row]) > 0).all()


@pytest.mark.parametrize("method", list(REDUCERS))
@pytest.mark.parametrize("restore", [False, True])
@pytest.mark.parametrize("tokens", [1, 2, 5, 8, 15])
def test_invariants_every_reducer(method, restore, tokens):
    x, scores = _inputs()
    red = reduce(x, method, tokens=tokens, restore=restore, **scores)
    check_invariants(x, red, tokens)


@pytest.mark.parametrize("method", list(REDUCERS))
def test_non_square_grid_and_keep_fraction(method):
    x, scores = _inputs(n=12)
    red = reduce(x, method, keep=0.4, grid=(3, 4), **scores)
    check_invariants(x, red, 5)  # round(0.4 * 12) = 5


@pytest.mark.parametrize("method", list(REDUCERS))
@pytest.mark.parametrize("rule", ["first", "last", "mean"])
def test_position_rules_keep_invariants(method, rule):
    x, scores = _inputs()
    red = reduce(x, method, tokens=6, position_rule=rule, **scores)
    check_invariants(x, red, 6, rule=rule)


@pytest.mark.parametrize("method", list(REDUCERS))
@pytest.mark.parametrize("restore", [False, True])
def test_deterministic(method, restore):
    x, scores = _inputs(seed=3)
    one = reduce(x, method, tokens=7, restore=restore, **scores)
    two = reduce(x, method, tokens=7, restore=restore, **scores)
    for field in ("features", "sizes", "assignment", "positions", "merged"):
        assert mx.array_equal(getattr(one, field), getattr(two, field)).item(), field


@pytest.mark.parametrize("method", list(REDUCERS))
@pytest.mark.parametrize("restore", [False, True])
def test_keep_all_is_identity(method, restore):
    x, scores = _inputs()
    red = reduce(x, method, keep=1.0, restore=restore, **scores)
    ar = np.broadcast_to(np.arange(N), (B, N))
    assert mx.array_equal(red.features, x).item()
    assert (np.array(red.sizes) == 1).all()
    assert (np.array(red.positions) == ar).all()
    assert (np.array(red.assignment) == ar).all()
    assert not np.array(red.merged).any()


@pytest.mark.parametrize("method", list(REDUCERS))
def test_groups_hold_their_members_mean_or_the_kept_token(method):
    x, scores = _inputs(seed=5)
    xs = np.array(x)
    for restore in (False, True):
        red = reduce(x, method, tokens=6, restore=restore, **scores)
        f, a, p = (
            np.array(red.features),
            np.array(red.assignment),
            np.array(red.positions),
        )
        merged = np.array(red.merged)
        prunes_only = method in PRUNERS and not restore
        for row in range(B):
            for j in range(6):
                if prunes_only or (method in PRUNERS and not merged[row, j]):
                    # Pruning keeps the token's features bit for bit.
                    assert (f[row, j] == xs[row, p[row, j]]).all()
                else:
                    mean = xs[row][a[row] == j].mean(axis=0)
                    np.testing.assert_allclose(f[row, j], mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", PRUNERS)
def test_restore_splits_budget_between_base_and_anchors(method):
    x, scores = _inputs(seed=7)
    red = reduce(x, method, tokens=6, **scores)
    merged, sizes = np.array(red.merged), np.array(red.sizes)
    assert (merged.sum(axis=1) == 3).all()  # k = M // 2 anchors
    assert (sizes[~merged] == 1).all()  # kept tokens stand for themselves
    assert (sizes[merged].reshape(B, 3).sum(axis=1) == N - 3).all()


@pytest.mark.parametrize("method", PRUNERS)
def test_restore_with_one_token_is_a_single_anchor(method):
    x, scores = _inputs()
    red = reduce(x, method, tokens=1, **scores)
    assert np.array(red.merged).all() and (np.array(red.sizes) == N).all()


@pytest.mark.parametrize("method", PRUNERS)
def test_anchors_off_is_the_base_alone(method):
    x, scores = _inputs(seed=2)
    ablated = reduce(x, method, tokens=6, restore=True, anchors=False, **scores)
    base = reduce(x, method, tokens=6, restore=False, **scores)
    for field in ("features", "sizes", "assignment", "positions", "merged"):
        assert mx.array_equal(getattr(ablated, field), getattr(base, field)).item()


@pytest.mark.parametrize("method", MERGERS)
def test_mergers_are_unchanged_by_restore(method):
    x, scores = _inputs(seed=4)
    with_r = reduce(x, method, tokens=5, restore=True, **scores)
    without = reduce(x, method, tokens=5, restore=False, **scores)
    assert mx.array_equal(with_r.assignment, without.assignment).item()
    assert mx.array_equal(with_r.features, without.features).item()


def test_batch_rows_are_reduced_independently():
    x, scores = _inputs(seed=9)
    for method in REDUCERS:
        if method == "random":  # each row draws its own sample
            continue
        both = reduce(x, method, tokens=5, **scores)
        one = reduce(x[1:], method, tokens=5, **{k: v[1:] for k, v in scores.items()})
        assert mx.array_equal(both.assignment[1:], one.assignment).item(), method
        assert mx.allclose(both.features[1:], one.features, atol=1e-6).item(), method


def test_reducers_never_copy_to_the_host():
    # Inputs are validated once in api/scores; the reducers themselves stay on device.
    import pathlib
    import re

    core = pathlib.Path(__file__).resolve().parents[1] / "restore_mlx" / "core"
    files = ("ops", "anchors", "positions", "pruners", "mergers", "spatial")
    # One exception, marked in place: divprune's blockwise greedy runs its steps ahead
    # on device and reads one flag per step back once per batch, to know whether every
    # pick had its distance row (an N x N matrix would need no read, and O(N^2) memory).
    allowed = re.compile(r".*# the one host read per batch\n")
    offenders = [
        name
        for name in files
        if re.search(
            r"\.item\(|\.tolist\(|np\.array\(",
            allowed.sub("", (core / f"{name}.py").read_text()),
        )
    ]
    assert offenders == []
