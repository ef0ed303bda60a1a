"""The overlay tells kept tokens from merged groups, on a hand-made reduction, keeps
the picture readable under its tint, and says what its marks mean in a legend."""

import mlx.core as mx
import numpy as np
import pytest
from PIL import Image

from restore_mlx import Reduction
from restore_mlx.overlay import (
    KEPT_COLOR,
    draw_reduction,
    group_colors,
    legend_lines,
    render_overlay,
    save_overlay,
)


def _reduction():
    # 4x4 grid -> 5 tokens: 0 and 3 kept (one patch each); 1 = left half minus token
    # 0's patch, 2 = right half minus token 3's patch, 4 = the bottom row.
    assignment = np.array(
        [[0, 1, 2, 2], [1, 1, 2, 3], [1, 1, 2, 2], [4, 4, 4, 4]]
    ).reshape(1, 16)
    merged = np.array([[False, True, True, False, True]])
    sizes = np.bincount(assignment[0], minlength=5)[None]
    return Reduction(
        features=mx.zeros((1, 5, 8)),
        sizes=mx.array(sizes),
        assignment=mx.array(assignment),
        positions=mx.array([[0, 1, 2, 7, 12]]),
        merged=mx.array(merged),
    )


def _cell(picture, r, c, cell):
    return np.asarray(picture)[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell]


def test_kept_outlined_merged_tinted_per_group():
    red = Image.new("RGB", (32, 32), (200, 0, 0))
    red_px = np.array([200, 0, 0])
    reduction = _reduction()
    picture = draw_reduction(
        red, np.array(reduction.assignment[0]), np.array(reduction.merged[0]), (4, 4)
    )
    cell = picture.width // 4
    assert picture.size == (4 * cell, 4 * cell) and cell >= 16
    kept = _cell(picture, 0, 0, cell)
    assert (kept[0, 0] == KEPT_COLOR).all()  # outline
    assert (kept[cell // 2, cell // 2] == red_px).all()  # inside untouched
    inner = [
        _cell(picture, r, c, cell)[cell // 2, cell // 2]
        for r, c in [(1, 0), (1, 1), (2, 1), (0, 2), (2, 3), (3, 0), (3, 3)]
    ]
    # Merged patches are tinted away from the image; one colour per group.
    assert all(not (px == red_px).all() for px in inner)
    assert (inner[0] == inner[1]).all() and (inner[1] == inner[2]).all()
    assert (inner[3] == inner[4]).all() and (inner[5] == inner[6]).all()
    assert not (inner[0] == inner[3]).all() and not (inner[0] == inner[5]).all()


def test_tint_leaves_the_picture_readable_and_groups_outlined():
    red = Image.new("RGB", (32, 32), (200, 0, 0))
    reduction = _reduction()
    picture = draw_reduction(
        red, np.array(reduction.assignment[0]), np.array(reduction.merged[0]), (4, 4)
    )
    cell = picture.width // 4
    colors = group_colors(5).astype(float)
    inside = _cell(picture, 1, 1, cell)[cell // 2, cell // 2].astype(float)
    # Group 1's tinted patch stays nearer the picture than the tint colour.
    assert np.abs(inside - [200, 0, 0]).sum() < np.abs(inside - colors[1]).sum()
    # Its outline, facing group 2, is in the group's own colour.
    edge = _cell(picture, 1, 1, cell)[cell // 2, -1]
    assert (edge == colors[1].round()).all()


def test_legend_below_the_picture_names_both_marks():
    red = Image.new("RGB", (32, 32), (200, 0, 0))
    reduction = _reduction()
    assignment = np.array(reduction.assignment[0])
    merged = np.array(reduction.merged[0])
    bare = draw_reduction(red, assignment, merged, (4, 4))
    full = render_overlay(red, assignment, merged, (4, 4))
    assert full.height > bare.height and full.width >= bare.width
    top = np.asarray(full)[: bare.height, : bare.width]
    assert (top == np.asarray(bare)).all()  # the picture itself is unchanged
    legend = np.asarray(full)[bare.height :]
    assert (legend == KEPT_COLOR).all(axis=-1).any()  # the kept-token swatch
    for g in (1, 2, 4):  # a swatch outlined in each merged group's colour
        assert (legend == group_colors(5)[g]).all(axis=-1).any()
    assert (legend.astype(int).sum(axis=-1) < 150).any()  # and dark text
    assert legend_lines(2, 3) == (
        "kept token, one patch each (2)",
        "merged group, one colour per group (3)",
    )


def test_grid_must_match_assignment():
    with pytest.raises(ValueError, match="grid"):
        render_overlay(Image.new("RGB", (8, 8)), np.zeros(16, int), [True], (3, 3))


def test_save_overlay_writes_png_atomically(tmp_path):
    reduction = _reduction()
    out = save_overlay(
        tmp_path / "o.png",
        Image.new("RGB", (20, 30)),
        np.array(reduction.assignment[0]),
        np.array(reduction.merged[0]),
        (4, 4),
    )
    assert Image.open(out).format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_token_grid_square_or_qwen_thw():
    from restore_mlx.overlay import token_grid

    assert token_grid(64) == (8, 8)
    assert token_grid(24, {"image_grid_thw": mx.array([[1, 8, 12]])}, merge=2) == (4, 6)
    with pytest.raises(ValueError, match="square"):
        token_grid(24)


def test_model_view_centre_crops_like_clip():
    from restore_mlx.overlay import model_view

    class Clip:
        do_center_crop = True
        crop_size = {"height": 10, "width": 10}

    wide = Image.new("RGB", (40, 20), (0, 0, 0))
    wide.paste((255, 255, 255), (15, 0, 25, 20))  # a white centre band
    view = model_view(wide, Clip())
    assert view.size == (10, 10)
    assert np.asarray(view)[5, 5].tolist() == [255, 255, 255]
    assert model_view(wide, None) is wide
