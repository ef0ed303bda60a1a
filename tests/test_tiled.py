"""Tiled architectures: what the shared tests cannot see from outside.

llava_onevision: the AnyRes layout the adapter reports matches mlx-vlm's packing
(base grid, tile grid with a newline after every row), and the newline tokens are
never reduced, whatever the method and budget.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import BUILDERS

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for


def _onevision():
    model, sample = BUILDERS["llava_onevision"]()
    return (
        model,
        sample,
        adapter_for(model).encode(model, sample["pixel_values"], sample),
    )


def test_onevision_segments_match_mlx_vlm_packing():
    model, sample, out = _onevision()
    base, tiles, newlines = out.segments
    assert (base.grid, tiles.grid, newlines.grid) == ((4, 4), (6, 8), (6, 1))
    assert not newlines.reducible and base.reducible and tiles.reducible
    # Every newline row of the packed features is mlx-vlm's image_newline vector.
    rows = np.array(out.features[0])
    newline = np.array(model.image_newline)
    for i in newlines.indices():
        np.testing.assert_array_equal(rows[i], newline)
    for i in tiles.indices():
        assert not np.array_equal(rows[i], newline)


@pytest.mark.parametrize("method", ["divprune", "pool", "tome", "fastv"])
@pytest.mark.parametrize("budget", [dict(keep=0.11), dict(tokens=2)])
def test_onevision_newlines_are_never_reduced(method, budget):
    model, sample, out = _onevision()
    newlines = out.segments[2]
    ri.apply(model, method=method, **budget)
    prepared = ri.prepare_tokens(model, sample)
    red = prepared.reduction
    positions = red.positions[0].tolist()
    fixed = newlines.indices().tolist()
    assert set(fixed) <= set(positions)
    for p in fixed:  # each stands alone, for itself, as it came from the tower
        g = positions.index(p)
        assert red.sizes[0, g].item() == 1 and not red.merged[0, g].item()
        assert mx.array_equal(red.features[0, g], out.features[0, p]).item()
    assert prepared.visual_tokens_after == len(fixed) + (
        budget.get("tokens") or max(1, round(0.11 * 64))
    )
    # In the prefilled prompt they are image tokens at their own positions, sized 1.
    size_bias = prepared.prompt.calibration.sizes[1]
    start = adapter_for(model).image_spans(model, sample["input_ids"])[0].start
    columns = np.array(prepared.prompt.rope)  # original positions: unreduced columns
    for p in fixed:
        at = int(np.flatnonzero(columns == start + p)[0])
        assert size_bias[at].item() == 0.0  # log 1: sized as text


def test_internvl_has_one_segment_per_tile():
    model, sample = BUILDERS["internvl_chat"]()
    out = adapter_for(model).encode(model, sample["pixel_values"], sample)
    assert [(s.offset, s.length, s.grid) for s in out.segments] == [
        (0, 16, (4, 4)), (16, 16, (4, 4)), (32, 16, (4, 4))
    ]  # fmt: skip
    # Budgets split over the tiles in proportion; nothing merges across tiles.
    ri.apply(model, method="pool", keep=0.25)
    red = ri.prepare_tokens(model, sample).reduction
    labels = np.array(red.assignment[0]).reshape(3, 16)
    assert red.num_tokens == 12
    assert [sorted(set(row.tolist())) for row in labels] == [
        list(range(4 * t, 4 * t + 4)) for t in range(3)
    ]
