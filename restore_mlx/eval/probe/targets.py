"""Auxiliary targets for the probe's language model, read off each question.

Answering needs a lookup (the word at the answer position, a cell, colour or shape,
matched against the visual tokens), and for relations a second lookup at the first
colour plus a gather of its result. Neither pays off in the answer loss before the
other works, so each is supervised on its own:

- ``LOOKUP`` after LM layer 1 at the answer position: what the looked-up word found
  (the object's colour, shape, row and column; or the count of a shape);
- ``FIRST`` after layer 1 at the first colour of a relation ("is RED left of blue"):
  that object's row and column;
- ``GATHERED`` after layer 2 at the answer position: the same, moved there, plus the
  relation asked and how the two objects compare (column, row: 1 less, 2 equal, 3
  greater). Without these the relation family sat at chance for 1550 steps while both
  objects' places were already read correctly: the comparison had no signal.

Class 0 means "not part of this question" and is left out of the loss.

Counting needs more than a lookup: attention averages what it finds, so the number of
matches survives only against a fixed "sink" weight. ``COUNT_SINK`` sets that pattern for
one layer-1 head on count questions (every token of an object of the asked shape weighs
1, the question's last token ``COUNT_SINK``): its output then grows as n / (n + 1) with
the count n. Without it, count sat at the answer priors for 1250 steps while the other
families reached 58-100%. The last target column (``ASKED_SHAPE``) names the shape.
"""

import numpy as np

from .scenes import COLORS, PLURALS, RELATIONS, SHAPES

_COLORS = list(COLORS)
_SINGULAR = {p: s for s, p in PLURALS.items()}

# (name, classes) of each target group.
LOOKUP = (("l_color", 7), ("l_shape", 5), ("l_row", 5), ("l_col", 5), ("count", 8))
LOOKUP_COUNT = 4  # the column of "count" (the count + 1, 0 if not asked)
FIRST = (("f_row", 5), ("f_col", 5))
GATHERED = (("g_row", 5), ("g_col", 5), ("relation", 5), ("col_cmp", 4), ("row_cmp", 4))
FIRST_POSITION = 1  # the text index of a relation's first colour: "is <colour> ..."
COUNT_HEAD = -1  # the layer-1 head whose attention the count targets shape: the last
COUNT_SINK = 9.0  # the weight of the last question token: one object's 3 x 3 tokens
# A relation's word ("is red LEFT of blue") is the third word, 1 or 2 before the answer
# position; one layer-1 head is shown where (directly supervised like counting: with a
# target on the relation read after layer 2 alone it stayed at chance).
RELATION_HEAD = 0
RELATION_POSITION = 2
RELATION_TARGET = len(LOOKUP) + len(FIRST) + 2  # the "relation" column of GATHERED
ASKED_SHAPE = len(LOOKUP) + len(FIRST) + len(GATHERED)  # column: shape + 1, or 0


def _obj(o):
    return [_COLORS.index(o.color) + 1, SHAPES.index(o.shape) + 1, o.row + 1, o.col + 1]


def question_targets(question: str, objects) -> np.ndarray:
    """int32 [13]: the LOOKUP, FIRST and GATHERED targets of ``question``, then the
    shape a count question asks about (``ASKED_SHAPE``)."""
    w = question.split()
    look = [0] * len(LOOKUP)
    first = [0, 0]
    compare = [0, 0, 0]
    asked = 0
    if w[0] == "what":  # what color|shape is at <cell>
        o = next(o for o in objects if o.cell == w[-1])
        look[:4] = _obj(o)
    elif w[0] == "where":  # where is <colour>
        look[:4] = _obj(next(o for o in objects if o.color == w[-1]))
    elif w[0] == "how":  # how many <shapes>
        look[LOOKUP_COUNT] = sum(o.shape == _SINGULAR[w[-1]] for o in objects) + 1
        asked = SHAPES.index(_SINGULAR[w[-1]]) + 1
    else:  # is <colour> <relation> <colour>
        b = next(o for o in objects if o.color == w[-1])
        a = next(o for o in objects if o.color == w[FIRST_POSITION])
        look[:4] = _obj(b)
        first = _obj(a)[2:]
        sign = lambda d: int(np.sign(d)) + 2  # noqa: E731
        compare = [
            RELATIONS.index(w[RELATION_POSITION]) + 1,
            sign(a.col - b.col),
            sign(a.row - b.row),
        ]
    return np.array([*look, *first, *first, *compare, asked], np.int32)
