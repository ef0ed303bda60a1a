"""Tiled architectures (llava_onevision, internvl): what the shared tests cannot see from outside.

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


@pytest.mark.parametrize("layout", ["internvl_chat", "internvl"])
def test_internvl_has_one_segment_per_tile(layout):
    model, sample = BUILDERS[layout]()
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


def _picture(width, height):
    from PIL import Image

    return Image.new("RGB", (width, height), (128, 128, 128))


def test_internvl_tiles_map_back_onto_their_regions_of_the_picture():
    from restore_mlx.adapters import internvl
    from restore_mlx.overlay import KEPT_COLOR, render_tiled

    model, sample = BUILDERS["internvl_chat"]()
    out = internvl.encode(model, sample["pixel_values"], sample)
    # A 2:1 picture is cut into 2 x 1 tiles, the thumbnail an overview of it all.
    placed = internvl.segment_boxes(model, None, _picture(128, 64), out.segments)
    assert [b.box for b in placed] == [(0, 0, 0.5, 1), (0.5, 0, 1, 1), (0, 0, 1, 1)]
    assert [b.overview for b in placed] == [False, False, True]
    assert [b.segment.offset for b in placed] == [0, 16, 32]
    kept = (np.arange(16), [False] * 16, (4, 4), placed[0].box)  # every patch kept
    one_group = (np.zeros(16, int), [True], (4, 4), placed[1].box)  # all merged
    picture = render_tiled(_picture(128, 64), [kept, one_group])
    pixels = np.asarray(picture)
    green = np.all(pixels == KEPT_COLOR, axis=-1)
    assert picture.height > 64  # the legend below the 128 x 64 picture
    assert green[:64, :64].sum() > 0 and green[:64, 64:128].sum() == 0
    assert np.all(pixels[20, 70:120] != 128)  # the merged tile is tinted
    with pytest.raises(ValueError, match="3 tiles in the prompt"):
        internvl.tile_arrangement((128, 64), 3)


def test_onevision_overlay_draws_the_tile_grid_over_the_whole_picture(tmp_path):
    from restore_mlx.generate import _save_overlays

    model, sample = BUILDERS["llava_onevision"]()
    ri.apply(model, method="divprune", keep=0.25)
    prepared = ri.prepare_tokens(model, sample)
    _save_overlays(tmp_path / "o.png", [_picture(60, 40)], None, prepared, model)
    from PIL import Image

    drawn = Image.open(tmp_path / "o.png")
    # 6 x 8 tile cells of at least 16 px over the 60 x 40 picture: scaled by 3
    # (the 4 x 4 base grid would have needed only 2).
    assert drawn.height > 120 and drawn.width >= 180
    green = np.all(np.asarray(drawn)[:120, :180] == (0, 255, 0), axis=-1)
    rows, cols = np.flatnonzero(green.any(axis=1)), np.flatnonzero(green.any(axis=0))
    assert rows.max() >= 100 and cols.max() >= 160  # marks reach across it all
