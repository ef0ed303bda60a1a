"""Reduction over several segments (images, tiles): budgets, independence, exactness."""

import mlx.core as mx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restore_mlx import reduce
from restore_mlx.core.segments import reduce_segments, split_tokens, whole
from restore_mlx.core.types import Segment


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50), min_size=1, max_size=6), st.data())
def test_split_tokens_is_proportional_and_exact(lengths, data):
    m = data.draw(st.integers(len(lengths), sum(lengths)))
    out = split_tokens(lengths, m)
    assert sum(out) == m
    assert all(1 <= o <= n for o, n in zip(out, lengths))
    share = [m * k / sum(lengths) for k in lengths]
    # Within one token of the proportional share, plus what the floor of one token
    # per segment takes from the others.
    floor_takes = sum(max(0.0, 1 - s) for s in share)
    assert all(abs(o - s) < 1 + floor_takes for o, s in zip(out, share))


def test_split_tokens_refuses_less_than_one_per_segment():
    with pytest.raises(ValueError, match="one token in each of 3"):
        split_tokens([4, 4, 4], 2)


def _x(n=48, d=16, seed=0):
    mx.random.seed(seed)
    return mx.random.normal((1, n, d))


@pytest.mark.parametrize("method", ["divprune", "pool", "tome", "uniform"])
def test_one_segment_equals_plain_reduce(method):
    x = _x(36)
    want = reduce(x, method, keep=0.25, grid=(6, 6))
    got = reduce_segments(x, whole(36, (6, 6)), method, keep=0.25)
    for a, b in zip(got.__dict__.values(), want.__dict__.values()):
        assert mx.array_equal(a, b).item()


@pytest.mark.parametrize("method", ["divprune", "pool", "tome"])
def test_nothing_merges_across_segments(method):
    x = _x(16 + 36)
    segments = (Segment(0, 16, (4, 4), image=0), Segment(16, 36, (6, 6), image=1))
    red = reduce_segments(x, segments, method, keep=0.25)
    sizes = red.sizes[0].tolist()
    assert sum(sizes) == 52 and red.num_tokens == 4 + 9
    labels = red.assignment[0].tolist()
    assert max(labels[:16]) < 4 <= min(labels[16:])  # groups stay in their image
    positions = red.positions[0].tolist()
    assert positions == sorted(positions)
    assert all(p < 16 for p in positions[:4]) and all(p >= 16 for p in positions[4:])


def test_fixed_segments_are_kept_and_take_no_budget():
    x = _x(20)
    segments = (Segment(0, 8), Segment(8, 2, reducible=False), Segment(10, 10))
    red = reduce_segments(x, segments, "divprune", keep=0.5, grid=None)
    positions = red.positions[0].tolist()
    assert 8 in positions and 9 in positions
    assert red.num_tokens == 2 + 9  # half of the 18 reducible, plus the two fixed
    fixed = [i for i, p in enumerate(positions) if p in (8, 9)]
    assert mx.array_equal(red.features[0, fixed[0]], x[0, 8]).item()


def test_per_token_scores_are_sliced_per_segment():
    x = _x(32)
    attention = mx.concatenate([mx.zeros((1, 16)), mx.arange(16)[None] / 16.0], axis=1)
    segments = (Segment(0, 16), Segment(16, 16))
    red = reduce_segments(x, segments, "fastv", tokens=4, text_attention=attention,
                          restore=False)  # fmt: skip
    # The top-2 of the second image by its own scores: its last two tokens.
    assert red.positions[0].tolist()[2:] == [30, 31]


def test_segments_must_cover_the_tokens():
    with pytest.raises(ValueError, match="cover"):
        reduce_segments(_x(10), (Segment(0, 4), Segment(5, 5)), "divprune", keep=0.5)


def _rows_with_separators(rows=4, cols=5, base=9, d=8):
    """A 3 x 3 base grid, then a rows x cols grid with a separator after every row."""
    x = _x(base + rows * (cols + 1), d)
    grid = Segment(base, rows * cols, (rows, cols), row_stride=cols + 1)
    seps = Segment(base + cols, rows, (rows, 1), reducible=False, row_stride=cols + 1)
    return x, (Segment(0, base, (3, 3)), grid, seps), grid, seps


@pytest.mark.parametrize("method", ["divprune", "pool", "tome"])
def test_a_grid_interrupted_by_separators_is_one_segment(method):
    x, segments, grid, seps = _rows_with_separators()
    red = reduce_segments(x, segments, method, keep=0.5)
    positions = red.positions[0].tolist()
    assert positions == sorted(positions)
    assert set(seps.indices().tolist()) <= set(positions)  # separators all kept
    # The grid's tokens reduce as the grid alone would, on its own 2-D layout.
    alone = reduce(mx.take(x, mx.array(grid.indices()), axis=1), method,
                   tokens=10, grid=(4, 5))  # fmt: skip
    index = grid.indices()
    want = [int(index[p]) for p in alone.positions[0].tolist()]
    assert [p for p in positions if p in set(index.tolist())] == want
    # Bookkeeping stays consistent after reordering: each token's group holds it.
    labels = red.assignment[0].tolist()
    sizes = red.sizes[0].tolist()
    assert [labels.count(g) for g in range(red.num_tokens)] == sizes
    for g, p in enumerate(positions):
        assert labels[p] == g
    for g, p in enumerate(positions):
        if not red.merged[0, g].item() and sizes[g] == 1:
            assert mx.array_equal(red.features[0, g], x[0, p]).item()


def test_strided_segments_must_cover_each_token_once():
    x, (base, grid, seps), *_ = _rows_with_separators()
    with pytest.raises(ValueError, match="each once"):
        reduce_segments(x, (base, grid), "divprune", keep=0.5)
    with pytest.raises(ValueError, match="grid of its length"):
        Segment(0, 6, (2, 2), row_stride=4)
