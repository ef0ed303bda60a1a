"""Questions about a scene, one family at a time, each with a one-word answer.

Families: ``attribute`` (colour or shape at a cell: "what color is at b3"),
``location`` (the cell of an object: "where is red" -> "b3"), ``count`` (objects of a
shape: "how many circles") and ``relation`` ("is red left of blue", also right of /
above / below; yes and no equally likely). Cells are named spreadsheet-style, column
letter then row number, "a1" at the top left. Colours are unique within a scene, so a
colour names one object.

The grammar is terse on purpose: every question ends on the word to look up (a cell, a
colour, a shape), so the answer position reads it without first gathering words from
elsewhere in the question (a first grammar, "what color is the object in row 2 column
3 ?", stalled at ~54% with the binding of row and column digits as the slow hop).
"""

from .scenes import (
    COLORS,
    FAMILIES,
    GRID,
    MAX_OBJECTS,
    PLURALS,
    RELATIONS,
    SHAPES,
    Example,
    cell_name,
    render,
    rng_for,
    sample_objects,
)

RELATION_WORDS = {
    "left": "left of",
    "right": "right of",
    "above": "above",
    "below": "below",
}


def _attribute(rng, objects):
    o = objects[int(rng.integers(len(objects)))]
    if rng.random() < 0.5:
        return f"what color is at {o.cell}", o.color
    return f"what shape is at {o.cell}", o.shape


def _location(rng, objects):
    o = objects[int(rng.integers(len(objects)))]
    return f"where is {o.color}", o.cell


def _count(rng, objects):
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    n = sum(o.shape == shape for o in objects)
    return f"how many {PLURALS[shape]}", str(n)


def _count_present(rng, objects):
    """A count question about the shape of a random object: never 0, and n times as
    likely to ask about a shape that n objects have. For training only: asked
    uniformly, 3 or more of a shape is 6% of count questions, too rare to learn."""
    shape = objects[int(rng.integers(len(objects)))].shape
    n = sum(o.shape == shape for o in objects)
    return f"how many {PLURALS[shape]}", str(n)


def holds(a, relation: str, b) -> bool:
    """Whether object ``a`` is strictly ``relation`` of object ``b`` on the grid."""
    if relation == "left":
        return a.col < b.col
    if relation == "right":
        return a.col > b.col
    if relation == "above":
        return a.row < b.row
    if relation == "below":
        return a.row > b.row
    raise ValueError(f"unknown relation {relation!r}; expected one of {RELATIONS}")


def _relation(rng, objects):
    want = bool(rng.random() < 0.5)
    options = [
        (a, r, b)
        for a in objects
        for b in objects
        if a is not b
        for r in RELATIONS
        if holds(a, r, b) == want
    ]
    a, r, b = options[int(rng.integers(len(options)))]
    return f"is {a.color} {RELATION_WORDS[r]} {b.color}", "yes" if want else "no"


_ASK = {
    "attribute": _attribute,
    "location": _location,
    "count": _count,
    "relation": _relation,
    "count-present": _count_present,
}
TRAINING_FAMILIES = ("count-present",)  # extra question mixes, never evaluated


def make_example(
    split: str,
    seed: int,
    index: int,
    family: str,
    objects: tuple = (2, MAX_OBJECTS),
    clutter: int = 12,
) -> Example:
    """Example ``index`` of ``family`` in ``split``; ``objects`` bounds the count."""
    if family not in _ASK:
        raise ValueError(
            f"unknown question family {family!r}; expected one of "
            f"{(*FAMILIES, *TRAINING_FAMILIES)}"
        )
    lo, hi = objects
    if family == "relation":
        lo = max(lo, 2)  # a relation needs two objects
    if not 1 <= lo <= hi <= MAX_OBJECTS:
        raise ValueError(
            f"object count range {objects} must lie within [1, {MAX_OBJECTS}]"
        )
    rng = rng_for(split, seed, index)
    objs = sample_objects(rng, int(rng.integers(lo, hi + 1)))
    question, answer = _ASK[family](rng, objs)
    return Example(render(objs, rng, clutter), objs, family, question, answer)


def make_set(
    split: str, seed: int, per_family: int, families=FAMILIES, **kwargs
) -> list:
    """``per_family`` examples of every family, interleaved by index."""
    if per_family < 1:
        raise ValueError(f"per_family must be at least 1, got {per_family}")
    out = []
    for i in range(per_family):
        for k, fam in enumerate(families):
            out.append(make_example(split, seed, i * len(families) + k, fam, **kwargs))
    return out


def cells() -> list:
    """Every cell name, row by row."""
    return [cell_name(r, c) for r in range(GRID) for c in range(GRID)]


def answer_words() -> list:
    """Every word that can be an answer."""
    nums = [str(i) for i in range(MAX_OBJECTS + 1)]
    return [*COLORS, *SHAPES, *nums, *cells(), "yes", "no"]


def question_words() -> list:
    """Every word that can appear in a question."""
    fixed = "what color shape is at where how many left right of above below".split()
    return [*fixed, *COLORS, *PLURALS.values(), *cells()]
