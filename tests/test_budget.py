"""Budgets: M from keep/tokens, RESTORE's split, and exactly-M pooling on any grid."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restore_mlx import reduce
from restore_mlx.core.budget import resolve_budget, split_budget
from restore_mlx.core.positions import group_positions
from restore_mlx.core.spatial import grid_partition


def test_keep_fraction_rounds_and_never_reaches_zero():
    assert resolve_budget(576, keep=64 / 576) == 64
    assert resolve_budget(576, keep=0.5) == 288
    assert resolve_budget(10, keep=0.01) == 1
    assert resolve_budget(10, keep=1.0) == 10
    assert resolve_budget(10, keep=0.35) == round(3.5)  # Python's round, as specified
    assert resolve_budget(10, tokens=7) == 7


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5000), keep=st.floats(1e-6, 1.0))
def test_keep_budget_is_in_range(n, keep):
    m = resolve_budget(n, keep=keep)
    assert 1 <= m <= n
    assert m == max(1, round(keep * n))


@settings(max_examples=30, deadline=None)
@given(m=st.integers(1, 5000))
def test_split_budget_keeps_the_total(m):
    kept, anchors = split_budget(m)
    assert kept + anchors == m and anchors >= 1 and kept >= 0
    assert anchors == (m // 2 if m > 1 else 1)


def test_split_budget_rejects_zero():
    with pytest.raises(ValueError, match="at least 1"):
        split_budget(0)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 30), w=st.integers(1, 30), data=st.data())
def test_grid_partition_gives_exactly_m_contiguous_pools(h, w, data):
    m = data.draw(st.integers(1, h * w))
    labels = grid_partition(m, h, w).reshape(h, w)
    assert sorted(np.unique(labels).tolist()) == list(range(m))
    for g in range(m):
        rows, cols = np.nonzero(labels == g)
        # Each pool is a full rectangle of the grid.
        assert len(rows) == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)


def test_pool_that_tiles_is_plain_average_pooling():
    x = mx.array(np.random.default_rng(0).normal(size=(2, 576, 4)).astype(np.float32))
    red = reduce(x, "pool", tokens=144)  # 24 x 24 -> 12 x 12: 2 x 2 pooling
    want = np.array(x).reshape(2, 12, 2, 12, 2, 4).mean(axis=(2, 4)).reshape(2, 144, 4)
    np.testing.assert_allclose(np.array(red.features), want, rtol=1e-5, atol=1e-6)
    assert (np.array(red.sizes) == 4).all()
    # The lower median of a 2 x 2 block (members p, p+1, p+24, p+25) is p + 1.
    corner = (np.arange(12)[:, None] * 48 + np.arange(12)[None, :] * 2).reshape(-1)
    assert (np.array(red.positions) == corner + 1).all()


def test_position_rules_on_one_group():
    # Group 0 holds 1, 4, 6, 7 and group 1 holds 0, 2, 3, 5.
    a = mx.array([[1, 0, 1, 1, 0, 1, 0, 0]], dtype=mx.int32)
    sizes = mx.array([[4, 4]], dtype=mx.int32)
    got = {
        r: group_positions(a, sizes, r).tolist()[0] for r in ("first", "median", "last")
    }
    assert got == {"first": [1, 0], "median": [4, 2], "last": [7, 5]}
    assert group_positions(a, sizes, "mean").tolist()[0] == [5, 3]  # 4.5, 2.5 round up
