"""Draw a reduction over its image: which patches each reduced token stands for.

Kept tokens (chosen by the base reducer, one patch each) get an outline; merged groups
are tinted, one colour per group, with borders where neighbouring patches belong to
different groups. Pure functions of the image and the reduction's bookkeeping.
"""

import colorsys
import math
from pathlib import Path

import numpy as np

from .errors import write_atomic

KEPT_COLOR = (0, 255, 0)
BORDER_COLOR = (255, 255, 255)
TINT_ALPHA = 0.45


def group_colors(num: int, seed: int = 0) -> np.ndarray:
    """``num`` distinct RGB colours (uint8 [num, 3]), golden-ratio hue steps."""
    hues = (seed * 0.13 + np.arange(num) * 0.618034) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues]
    return (np.asarray(rgb, dtype=np.float32) * 255).round().astype(np.uint8)


def _cell_edges(cells: int, pixels: int) -> np.ndarray:
    return np.linspace(0, pixels, cells + 1).round().astype(int)


def render_overlay(image, assignment, merged, grid, min_cell_px: int = 16):
    """The overlay as a new RGB ``PIL.Image``.

    ``image``: a PIL image (the grid is stretched over all of it). ``assignment``: [N]
    reduced-token index of every original token, row-major over ``grid`` = (rows, cols)
    with rows * cols == N. ``merged``: [M] bool, True for tokens made by anchor merging.
    The image is upscaled so each grid cell is at least ``min_cell_px`` pixels.
    """
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
                _group_borders(block, labels, r, c)
            else:
                _outline(block, KEPT_COLOR)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


def _outline(block: np.ndarray, color) -> None:
    block[0, :] = block[-1, :] = color
    block[:, 0] = block[:, -1] = color


def _group_borders(block: np.ndarray, labels: np.ndarray, r: int, c: int) -> None:
    """Draw this cell's sides that face a cell of another group."""
    rows, cols = labels.shape
    g = labels[r, c]
    if r == 0 or labels[r - 1, c] != g:
        block[0, :] = BORDER_COLOR
    if r == rows - 1 or labels[r + 1, c] != g:
        block[-1, :] = BORDER_COLOR
    if c == 0 or labels[r, c - 1] != g:
        block[:, 0] = BORDER_COLOR
    if c == cols - 1 or labels[r, c + 1] != g:
        block[:, -1] = BORDER_COLOR


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
