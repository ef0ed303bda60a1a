"""Draw a reduction over its image: which patches each reduced token stands for.

Kept tokens (chosen by the base reducer, one patch each) get a green outline; merged
groups get a light tint, one colour per group, and an outline in that colour where
neighbouring patches belong to another group. The tint is light so the picture stays
readable under it; a legend below the picture says what the marks mean. A tiled
image's tiles are each drawn over the region of the picture they were cut from (the
adapter's ``segment_boxes``); its downscaled view of the whole picture (thumbnail,
global image, AnyRes base image) is drawn on a second copy of the picture, a panel to
the right, where it hides no tile. Pure functions of the image and the reduction's
bookkeeping.
"""

import colorsys
import math
from pathlib import Path

import numpy as np

from .errors import write_atomic

KEPT_COLOR = (0, 255, 0)
# Light enough that the picture shows through; the group outlines carry the colour.
TINT_ALPHA = 0.25
LEGEND_BACKGROUND = (255, 255, 255)
LEGEND_TEXT = (0, 0, 0)
LEGEND_PAD = 4
LEGEND_SWATCH = 12


def group_colors(num: int, seed: int = 0) -> np.ndarray:
    """``num`` distinct RGB colours (uint8 [num, 3]), golden-ratio hue steps."""
    hues = (seed * 0.13 + np.arange(num) * 0.618034) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]
    return (np.asarray(rgb, dtype=np.float32) * 255).round().astype(np.uint8)


def _cell_edges(cells: int, pixels: int) -> np.ndarray:
    return np.linspace(0, pixels, cells + 1).round().astype(int)


def render_overlay(image, assignment, merged, grid, min_cell_px: int = 16):
    """The overlay as a new RGB ``PIL.Image``: the marked picture on top, its legend
    below (``draw_reduction`` and ``add_legend``).

    ``image``: a PIL image (the grid is stretched over all of it). ``assignment``: [N]
    reduced-token index of every original token, row-major over ``grid`` = (rows, cols)
    with rows * cols == N. ``merged``: [M] bool, True for tokens made by anchor merging.
    The image is upscaled so each grid cell is at least ``min_cell_px`` pixels.
    """
    picture = draw_reduction(image, assignment, merged, grid, min_cell_px)
    merged = np.asarray(merged).reshape(-1).astype(bool)
    used = np.unique(np.asarray(assignment).reshape(-1))
    kept = int((~merged[used]).sum())
    groups = used[merged[used]]
    return add_legend(picture, kept, len(groups), group_colors(merged.size)[groups])


WHOLE = (0.0, 0.0, 1.0, 1.0)
# The legend's note under an overlay that has an overview panel.
OVERVIEW_NOTE = "right: the model's downscaled view of the whole picture"
PANEL_GAP = 8


def render_tiled(image, parts, min_cell_px: int = 16, overview=()):
    """The overlay of an image reduced in several parts (tiles), each drawn over the
    region of the picture it covers, with one legend for all: a new RGB image.

    ``parts``: [(assignment [n], merged [m], grid (rows, cols), box)] where ``box`` is
    the (left, top, right, bottom) fractions of the picture the part's grid covers, and
    each part's assignment indexes its own ``merged``. ``overview``: parts of the same
    form for a downscaled view of the whole picture (a thumbnail, a global image),
    drawn on a second copy of the picture to the right, so they hide no tile. Each
    panel is upscaled so that every cell of its parts is at least ``min_cell_px``.
    """
    panels = [draw_parts(image, parts, min_cell_px)]
    if overview:
        panels.append(draw_parts(image, overview, min_cell_px))
    kept = groups = 0
    colors = []
    for assignment, merged, _, _ in list(parts) + list(overview):
        merged = np.asarray(merged).reshape(-1).astype(bool)
        used = np.unique(np.asarray(assignment).reshape(-1))
        kept += int((~merged[used]).sum())
        groups += int(merged[used].sum())
        colors.extend(group_colors(merged.size)[used[merged[used]]])
    note = OVERVIEW_NOTE if overview else None
    return add_legend(side_by_side(panels), kept, groups, np.asarray(colors[:3]), note)


def draw_parts(image, parts, min_cell_px: int = 16):
    """The picture, upscaled by the smallest integer that gives every cell of every
    part ``min_cell_px`` pixels, with each part drawn over its box (no legend)."""
    from PIL import Image

    scale = 1
    for _, _, (rows, cols), (x0, y0, x1, y1) in parts:
        w, h = (x1 - x0) * image.width, (y1 - y0) * image.height
        scale = max(scale, math.ceil(min_cell_px * max(cols / w, rows / h)))
    canvas = image.convert("RGB").resize(
        (image.width * scale, image.height * scale), Image.NEAREST
    )
    for assignment, merged, grid, (x0, y0, x1, y1) in parts:
        box = tuple(
            round(v * n)
            for v, n in zip((x0, y0, x1, y1), (canvas.width, canvas.height) * 2)
        )
        crop = canvas.crop(box)
        canvas.paste(draw_reduction(crop, assignment, merged, grid, 1), box[:2])
    return canvas


def side_by_side(panels):
    """``panels`` (PIL images) left to right, top-aligned, ``PANEL_GAP`` apart, on
    the legend's background."""
    from PIL import Image

    width = sum(p.width for p in panels) + PANEL_GAP * (len(panels) - 1)
    canvas = Image.new("RGB", (width, max(p.height for p in panels)), LEGEND_BACKGROUND)
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + PANEL_GAP
    return canvas


def draw_reduction(image, assignment, merged, grid, min_cell_px: int = 16):
    """The picture with the reduction drawn over it, no legend (see render_overlay)."""
    from PIL import Image

    rows, cols = grid
    assignment = np.asarray(assignment).reshape(-1)
    merged = np.asarray(merged).reshape(-1).astype(bool)
    if assignment.size != rows * cols:
        raise ValueError(f"grid {rows}x{cols} does not match {assignment.size} tokens")
    if assignment.size and (assignment.min() < 0 or assignment.max() >= merged.size):
        raise ValueError("assignment refers to tokens outside merged")
    scale = max(1, -(-min_cell_px * max(rows, cols) // max(image.width, image.height)))
    size = (image.width * scale, image.height * scale)
    pixels = np.asarray(image.convert("RGB").resize(size, Image.NEAREST), np.float32)
    ys, xs = _cell_edges(rows, size[1]), _cell_edges(cols, size[0])
    labels = assignment.reshape(rows, cols)
    colors = group_colors(merged.size).astype(np.float32)
    for r in range(rows):
        for c in range(cols):
            g = labels[r, c]
            block = pixels[ys[r] : ys[r + 1], xs[c] : xs[c + 1]]
            if merged[g]:
                block[:] = (1 - TINT_ALPHA) * block + TINT_ALPHA * colors[g]
                _group_borders(block, labels, r, c, colors[g])
            else:
                _outline(block, KEPT_COLOR)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _outline(block: np.ndarray, color) -> None:
    block[0, :] = block[-1, :] = color
    block[:, 0] = block[:, -1] = color


def _group_borders(block, labels: np.ndarray, r: int, c: int, color) -> None:
    """Outline, in the group's colour, this cell's sides that face another group."""
    rows, cols = labels.shape
    g = labels[r, c]
    if r == 0 or labels[r - 1, c] != g:
        block[0, :] = color
    if r == rows - 1 or labels[r + 1, c] != g:
        block[-1, :] = color
    if c == 0 or labels[r, c - 1] != g:
        block[:, 0] = color
    if c == cols - 1 or labels[r, c + 1] != g:
        block[:, -1] = color


def legend_lines(kept: int, groups: int) -> tuple:
    """The legend's two entries: what a green outline and a tint stand for."""
    return (
        f"kept token, one patch each ({kept})",
        f"merged group, one colour per group ({groups})",
    )


def add_legend(picture, kept: int, groups: int, colors, note=None):
    """``picture`` with a legend strip below it: a green-outlined swatch for kept
    tokens, swatches in the first group colours for merged groups, then ``note`` (a
    line of text) if given. The canvas widens (white on the right) when the legend is
    wider than a small picture."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    lines = legend_lines(kept, groups) + ((note,) if note else ())
    probe = ImageDraw.Draw(picture)
    boxes = [probe.textbbox((0, 0), line, font=font) for line in lines]
    row_h = max(LEGEND_SWATCH, *(b[3] - b[1] for b in boxes)) + LEGEND_PAD
    swatches = 3 * LEGEND_SWATCH + 2 * LEGEND_PAD  # room for up to three colours
    text_x = LEGEND_PAD + swatches
    width = max(picture.width, text_x + max(b[2] for b in boxes) + LEGEND_PAD)
    height = picture.height + LEGEND_PAD + len(lines) * row_h
    canvas = Image.new("RGB", (width, height), LEGEND_BACKGROUND)
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    y = picture.height + LEGEND_PAD
    _swatch(draw, LEGEND_PAD, y, fill=LEGEND_BACKGROUND, outline=KEPT_COLOR)
    for i, color in enumerate(np.asarray(colors)[:3]):
        tint = (1 - TINT_ALPHA) * np.array(LEGEND_BACKGROUND) + TINT_ALPHA * color
        x = LEGEND_PAD + i * (LEGEND_SWATCH + LEGEND_PAD)
        _swatch(draw, x, y + row_h, fill=_rgb(tint), outline=_rgb(color))
    for i, line in enumerate(lines):
        draw.text((text_x, y + i * row_h), line, fill=LEGEND_TEXT, font=font)
    return canvas


def _swatch(draw, x: int, y: int, fill, outline) -> None:
    box = (x, y, x + LEGEND_SWATCH - 1, y + LEGEND_SWATCH - 1)
    draw.rectangle(box, fill=fill, outline=outline, width=2)


def _rgb(color) -> tuple:
    return tuple(int(round(float(v))) for v in color)


def model_view(picture, image_processor=None):
    """The part of ``picture`` the model sees: CLIP-style processors resize the short
    side and centre-crop; others (Qwen) resize the whole picture, so keep it all."""
    ip = image_processor
    crop = (
        getattr(ip, "crop_size", None) if getattr(ip, "do_center_crop", False) else None
    )
    if not crop:
        return picture
    w, h = crop["width"], crop["height"]
    scale = max(w / picture.width, h / picture.height)
    resized = picture.resize(
        (max(w, round(picture.width * scale)), max(h, round(picture.height * scale)))
    )
    left, top = (resized.width - w) // 2, (resized.height - h) // 2
    return resized.crop((left, top, left + w, top + h))


def token_grid(num_tokens: int, model_inputs=None, merge: int = 1) -> tuple:
    """(rows, cols) of one image's visual tokens. Qwen processors report the patch grid
    (``image_grid_thw``), merged ``merge`` x ``merge`` per token; others are square."""
    thw = (model_inputs or {}).get("image_grid_thw")
    if thw is not None:
        _, h, w = (int(v) for v in np.array(thw).reshape(-1, 3)[0])
        return h // merge, w // merge
    side = math.isqrt(num_tokens)
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} visual tokens do not form a square grid")
    return side, side


def save_overlay(path, image, assignment, merged, grid, **kwargs) -> Path:
    """Render and write the overlay PNG to ``path`` atomically (no partial file)."""
    path = Path(path)
    picture = render_overlay(image, assignment, merged, grid, **kwargs)
    return write_atomic(path, lambda f: picture.save(f, format="PNG"), binary=True)
