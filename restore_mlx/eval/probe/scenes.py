"""Seeded scenes of coloured shapes on a grid, and questions that need the image.

A scene is a 4 x 4 grid of 24 px cells on a 96 px image, so every cell covers exactly
3 x 3 patches of an 8 px-patch vision tower. Grey clutter (specks and thin lines) fills
the background; it never uses an object colour, so it can distract but not mislead.

Every example is drawn from its own generator ``default_rng([split, seed, index])``:
splits never share a stream, and any ``seed`` gives a fresh, reproducible set.
"""

from dataclasses import dataclass

import numpy as np

IMAGE_SIZE = 96
PATCH = 8
GRID = 4
CELL = IMAGE_SIZE // GRID
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "orange": (245, 140, 20),
}
SHAPES = ("square", "circle", "triangle", "cross")
PLURALS = {
    "square": "squares",
    "circle": "circles",
    "triangle": "triangles",
    "cross": "crosses",
}
RELATIONS = ("left", "right", "above", "below")
FAMILIES = ("attribute", "location", "count", "relation")
SPLITS = {"train": 0, "val": 1, "test": 2}
MAX_OBJECTS = 6


@dataclass(frozen=True)
class Obj:
    """One object: its cell (row, col, 0-based), colour name and shape name."""

    row: int
    col: int
    color: str
    shape: str

    @property
    def cell(self) -> str:
        return cell_name(self.row, self.col)


@dataclass(frozen=True)
class Example:
    """An image (uint8 H x W x 3), its objects, one question and its one-word answer."""

    image: np.ndarray
    objects: tuple
    family: str
    question: str
    answer: str


def rng_for(split: str, seed: int, index: int) -> np.random.Generator:
    """The generator of example ``index`` of ``split`` under ``seed``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLITS)}")
    return np.random.default_rng([SPLITS[split], int(seed), int(index)])


def cell_name(row: int, col: int) -> str:
    """Spreadsheet-style name of a cell (0-based row, col): column letter, row number,
    "a1" top left, "d4" bottom right."""
    return "abcd"[col] + str(row + 1)


def sample_objects(rng: np.random.Generator, n: int) -> tuple:
    """``n`` objects in distinct cells with distinct colours (so a colour names one
    object); shapes may repeat."""
    if not 1 <= n <= MAX_OBJECTS:
        raise ValueError(f"number of objects must be in [1, {MAX_OBJECTS}], got {n}")
    cells = rng.choice(GRID * GRID, size=n, replace=False)
    colors = rng.choice(len(COLORS), size=n, replace=False)
    shapes = rng.integers(0, len(SHAPES), size=n)
    names = list(COLORS)
    return tuple(
        Obj(int(c) // GRID, int(c) % GRID, names[int(k)], SHAPES[int(s)])
        for c, k, s in zip(cells, colors, shapes)
    )


def _shape_mask(shape: str, size: int) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] + 0.5
    c, r = size / 2, size / 2
    if shape == "square":
        return np.ones((size, size), bool)
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= r * r
    if shape == "triangle":
        return np.abs(x - c) <= y / 2  # apex at the top, base at the bottom
    if shape == "cross":
        t = size / 6
        return (np.abs(x - c) <= t) | (np.abs(y - c) <= t)
    raise ValueError(f"unknown shape {shape!r}")


def render(objects, rng: np.random.Generator, clutter: int = 12) -> np.ndarray:
    """Draw ``objects`` with jittered size, place and colour over grey clutter."""
    img = np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 235, np.int16)
    for _ in range(clutter):
        grey = int(rng.integers(110, 200))
        y, x = rng.integers(0, IMAGE_SIZE, size=2)
        if rng.random() < 0.5:  # a speck
            img[y : y + 2, x : x + 2] = grey
        elif rng.random() < 0.5:  # a thin horizontal line
            img[y, x : x + int(rng.integers(6, 20))] = grey
        else:
            img[y : y + int(rng.integers(6, 20)), x] = grey
    for o in objects:
        # Centred in the cell with 1 px of jitter: each shape then covers the cell's
        # 3 x 3 patches in a nearly fixed pattern, which a small ViT learns fast (fully
        # random placement left shape at ~50% per object after 300 tower steps).
        size = int(rng.integers(17, 21))
        margin = (CELL - size) // 2
        y0 = o.row * CELL + margin + int(rng.integers(-1, 2))
        x0 = o.col * CELL + margin + int(rng.integers(-1, 2))
        tint = np.clip(
            np.array(COLORS[o.color]) + rng.integers(-15, 16, size=3), 0, 255
        )
        mask = _shape_mask(o.shape, size)
        img[y0 : y0 + size, x0 : x0 + size][mask] = tint
    return img.astype(np.uint8)
