"""Overlays of tiled images: every tile drawn over the region of the picture it was cut
from (``segment_boxes`` of the adapter), the downscaled whole-picture view (thumbnail,
global image, AnyRes base image) on a panel to the right.

SmolVLM and LFM2-VL run through their real processors (tiny HF-layout checkpoints);
InternVL and LLaVA-OneVision use the in-memory builders, whose processor-less tiling
is known (2 x 1 tiles + thumbnail; a 6 x 8 AnyRes grid + base image). Pictures are
large enough that no panel is upscaled, so the main panel is the picture's own size.
"""

import os
from types import SimpleNamespace

import mlx.core as mx
import numpy as np
import pytest
from conftest import BUILDERS

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import restore_mlx.integration as ri  # noqa: E402
from restore_mlx.adapters import adapter_for  # noqa: E402
from restore_mlx.adapters.processors import load  # noqa: E402
from restore_mlx.bench.checkpoints import write_checkpoint, write_image  # noqa: E402
from restore_mlx.generate import _format_prompt, _save_overlays  # noqa: E402
from restore_mlx.overlay import KEPT_COLOR, PANEL_GAP  # noqa: E402

# family -> (picture (width, height), tiles (rows, cols))
CASES = {
    "smolvlm": ((128, 64), (1, 2)),
    "lfm2_vl": ((384, 192), (2, 4)),
    "internvl_chat": ((256, 128), (1, 2)),
    "internvl": ((256, 128), (1, 2)),
    "llava_onevision": ((240, 160), (1, 1)),  # one grid over the stitched tiles
}


def _picture(tmp_path, width, height):
    from PIL import Image

    return Image.open(write_image(tmp_path / "picture.png", width, height=height))


@pytest.fixture(params=sorted(CASES))
def reduced(request, tmp_path_factory):
    """(model, processor, picture, prepared) of one image reduced by divprune 0.5."""
    arch = request.param
    picture = _picture(tmp_path_factory.mktemp(arch), *CASES[arch][0])
    if arch in (
        "internvl_chat",
        "internvl",
        "llava_onevision",
    ):  # in-memory, no processor
        model, sample = BUILDERS[arch]()
        ri.apply(model, method="divprune", keep=0.5)
        return arch, model, None, picture, ri.prepare_tokens(model, sample)
    folder = tmp_path_factory.mktemp(arch) / "hf"
    model, processor = load(str(write_checkpoint(arch, folder, image_size=32)))
    ri.apply(model, method="divprune", keep=0.5)
    prompt = _format_prompt(processor, model, ["what color ?"], None, 1)
    prepared = ri.prepare_inputs(model, processor, prompt, [picture])
    return arch, model, processor, picture, prepared


def _boxes(model, processor, picture, prepared):
    return adapter_for(model).segment_boxes(
        model, processor, picture, prepared.segments
    )


def test_tiles_cover_the_picture_once_and_the_overview_all_of_it(reduced):
    arch, model, processor, picture, prepared = reduced
    boxes = _boxes(model, processor, picture, prepared)
    tiles = [b.box for b in boxes if not b.overview]
    rows, cols = CASES[arch][1]
    assert len(tiles) == rows * cols
    assert [b.box for b in boxes if b.overview] == [(0.0, 0.0, 1.0, 1.0)]
    # Every pixel centre of the picture lies in exactly one tile.
    w, h = picture.size
    xs, ys = (np.arange(w) + 0.5) / w, (np.arange(h) + 0.5) / h
    cover = np.zeros((h, w), int)
    for x0, y0, x1, y1 in tiles:
        cover += np.outer((ys >= y0) & (ys < y1), (xs >= x0) & (xs < x1))
    assert np.all(cover == 1)
    # Row-major tiles: the second one is to the right of the first.
    if len(tiles) > 1:
        assert tiles[1][0] == tiles[0][2] and tiles[1][1] == tiles[0][1]


def test_every_tile_is_drawn_over_its_region(reduced, tmp_path):
    from PIL import Image

    arch, model, processor, picture, prepared = reduced
    _save_overlays(tmp_path / "o.png", [picture], processor, prepared, model)
    drawn = np.asarray(Image.open(tmp_path / "o.png")).astype(int)
    w, h = picture.size
    # The picture at its own size (a white gap right after it), the overview panel
    # as large again beside it (the legend may widen the canvas further).
    assert np.all(drawn[:h, w : w + PANEL_GAP] == 255)
    assert not np.all(drawn[:h, w - 1] == 255)
    assert drawn.shape[1] >= 2 * w + PANEL_GAP and drawn.shape[0] > h
    changed = np.any(drawn[:h, :w] != np.asarray(picture.convert("RGB")), axis=-1)
    rows, cols = CASES[arch][1]  # the processor's tiling, known independently
    for r in range(rows):
        for c in range(cols):
            x0, x1 = c * w // cols, (c + 1) * w // cols
            y0, y1 = r * h // rows, (r + 1) * h // rows
            # Outlines or tints in every cell of the tile: at least its borders.
            assert changed[y0:y1, x0:x1].mean() > 0.1, (arch, r, c)
    overview = drawn[:h, w + PANEL_GAP : 2 * w + PANEL_GAP]
    assert np.any(overview != np.asarray(picture.convert("RGB")))


def test_a_kept_token_is_outlined_in_its_own_cell_of_its_own_tile(tmp_path):
    """Everything merged into one group but token (row 2, col 1) of the second tile:
    the only green outline is that cell, in the right half of the picture."""
    from PIL import Image

    model, _ = BUILDERS["internvl_chat"]()
    sample = BUILDERS["internvl_chat"]()[1]
    segments = adapter_for(model).encode(model, sample["pixel_values"], sample).segments
    tile = segments[1]
    assignment = np.zeros(sum(s.length for s in segments), np.int32)
    assignment[tile.offset + 2 * 4 + 1] = 1
    reduction = SimpleNamespace(
        assignment=mx.array(assignment[None]), merged=mx.array([[True, False]])
    )
    prepared = SimpleNamespace(reduction=reduction, segments=segments)
    picture = _picture(tmp_path, 256, 128)
    _save_overlays(tmp_path / "o.png", [picture], None, prepared, model)
    drawn = np.asarray(Image.open(tmp_path / "o.png"))
    green = np.all(drawn[:128, :256] == KEPT_COLOR, axis=-1)
    ys, xs = np.nonzero(green)
    # Tile 1 is the right half (128 px, 4 x 4 cells of 32 px): cell (2, 1).
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (160, 191, 64, 95)


def _lfm2_resized_to_70(tmp_path):
    """(model, processor, picture, prepared): a 384 x 192 picture through LFM2-VL with
    --resize-shape 70, reduced by divprune 0.5."""
    model, processor = load(str(write_checkpoint("lfm2_vl", tmp_path / "hf")))
    ri.apply(model, method="divprune", keep=0.5)
    prompt = _format_prompt(processor, model, ["what color ?"], None, 1)
    picture = _picture(tmp_path, 384, 192)
    prepared = ri.prepare_inputs(
        model, processor, prompt, [picture], resize_shape=(70, 70)
    )
    return model, processor, picture, prepared


def test_tiles_follow_the_picture_as_resized_for_the_processor(tmp_path):
    """--resize-shape 70 shrinks a 384 x 192 picture to 70 x 35 before LFM2-VL's
    processor: 2 x 1 tiles + thumbnail instead of 4 x 2; the overlay places those."""
    from PIL import Image

    model, processor, picture, prepared = _lfm2_resized_to_70(tmp_path)
    assert len(prepared.segments) == 3
    _save_overlays(tmp_path / "o.png", [picture], processor, prepared, model, [70])
    drawn = np.asarray(Image.open(tmp_path / "o.png"))
    assert drawn.shape[0] > 192


def test_a_tiling_the_overlay_cannot_place_is_one_error_and_no_file(tmp_path):
    """Tokens prepared from a picture tiled 2 x 1 (resized), overlaid as if the
    processor had cut it 4 x 2 (e.g. other --processor-kwargs): an input error that
    names --overlay, and no picture is written."""
    from restore_mlx.errors import InputError

    model, processor, picture, prepared = _lfm2_resized_to_70(tmp_path)
    with pytest.raises(InputError, match="--overlay: 3 views"):
        _save_overlays(tmp_path / "o.png", [picture], processor, prepared, model)
    assert not (tmp_path / "o.png").exists()
