"""Questions about a scene, one family at a time, each with a one-word answer.

Families: ``attribute`` (colour or shape at a cell), ``location`` (row or column of a
named object), ``count`` (objects of a colour or a shape) and ``relation`` (is one named
object left of / right of / above / below another; yes and no equally likely). Rows
and columns are numbered 1-4 from the top left, as in "row 2 column 3".
"""

from .scenes import (
    COLORS,
    FAMILIES,
    MAX_OBJECTS,
    PLURALS,
    RELATIONS,
    SHAPES,
    Example,
    render,
    rng_for,
    sample_objects,
)


def _attribute(rng, objects):
    o = objects[int(rng.integers(len(objects)))]
    where = f"row {o.row + 1} column {o.col + 1}"
    if rng.random() < 0.5:
        return f"what color is the object in {where} ?", o.color
    return f"what shape is the object in {where} ?", o.shape


def _location(rng, objects):
    o = objects[int(rng.integers(len(objects)))]
    if rng.random() < 0.5:
        return f"which row is the {o.name} in ?", str(o.row + 1)
    return f"which column is the {o.name} in ?", str(o.col + 1)


def _count(rng, objects):
    if rng.random() < 0.5:
        color = list(COLORS)[int(rng.integers(len(COLORS)))]
        n = sum(o.color == color for o in objects)
        return f"how many {color} objects are there ?", str(n)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    n = sum(o.shape == shape for o in objects)
    return f"how many {PLURALS[shape]} are there ?", str(n)


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
    word = {"left": "left of", "right": "right of", "above": "above", "below": "below"}[
        r
    ]
    return f"is the {a.name} {word} the {b.name} ?", "yes" if want else "no"


_ASK = {
    "attribute": _attribute,
    "location": _location,
    "count": _count,
    "relation": _relation,
}


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
            f"unknown question family {family!r}; expected one of {FAMILIES}"
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


def answer_words() -> list:
    """Every word that can be an answer."""
    nums = [str(i) for i in range(MAX_OBJECTS + 1)]
    return [*COLORS, *SHAPES, *nums, "yes", "no"]


def question_words() -> list:
    """Every word that can appear in a question."""
    fixed = (
        "what color shape is the object in row column which how many objects are there "
        "left right of above below ?"
    ).split()
    return [*fixed, *COLORS, *SHAPES, *PLURALS.values(), *[str(i) for i in range(1, 5)]]
