"""Auxiliary targets for the probe's language model, read off each question.

Learning to answer needs two hops (gather the question's words at the answer
position, then look the named cell or object up among the visual tokens), and neither
hop pays off before the other exists: the first try sat at the answer priors. These
targets supervise each hop on its own. After LM layer 1 the answer position must say
what was asked (question type, cell, colours and shapes named); after layer 2 what the
lookup found (the referenced objects' attributes and places, the count). Class 0 means
"not part of this question".
"""

import numpy as np

from .scenes import COLORS, SHAPES

QTYPES = ("color_at", "shape_at", "row_of", "col_of", "count_color", "count_shape")
QTYPES += ("left", "right", "above", "below")
_COLORS = list(COLORS)
_PLURAL = {s + ("es" if s == "cross" else "s"): s for s in SHAPES}

# (name, classes) of the question targets (after layer 1), then the lookup targets.
GATHER = (("qtype", 1 + len(QTYPES)), ("cell_row", 5), ("cell_col", 5),
          ("a_color", 7), ("a_shape", 5), ("b_color", 7), ("b_shape", 5))  # fmt: skip
LOOKUP = (("l_color", 7), ("l_shape", 5), ("l_row", 5), ("l_col", 5),
          ("m_row", 5), ("m_col", 5), ("count", 8))  # fmt: skip


def _find(objects, color, shape):
    return next(o for o in objects if o.color == color and o.shape == shape)


def _obj(o):
    return [_COLORS.index(o.color) + 1, SHAPES.index(o.shape) + 1, o.row + 1, o.col + 1]


def question_targets(question: str, objects) -> np.ndarray:
    """int32 [14]: the GATHER then the LOOKUP targets of ``question`` on ``objects``."""
    w = question.split()
    g = {name: 0 for name, _ in GATHER}
    look = {name: 0 for name, _ in LOOKUP}
    if w[0] == "what":  # what color|shape is the object in row R column C ?
        r, c = int(w[w.index("row") + 1]), int(w[w.index("column") + 1])
        g.update(qtype=1 + QTYPES.index(f"{w[1]}_at"), cell_row=r, cell_col=c)
        o = next(o for o in objects if (o.row + 1, o.col + 1) == (r, c))
        look.update(zip(("l_color", "l_shape", "l_row", "l_col"), _obj(o)))
    elif w[0] == "which":  # which row|column is the C S in ?
        o = _find(objects, w[4], w[5])
        kind = "row_of" if w[1] == "row" else "col_of"
        g.update(qtype=1 + QTYPES.index(kind), a_color=_obj(o)[0], a_shape=_obj(o)[1])
        look.update(zip(("l_color", "l_shape", "l_row", "l_col"), _obj(o)))
    elif w[0] == "how":  # how many C objects | S-plural are there ?
        if w[3] == "objects":
            g.update(
                qtype=1 + QTYPES.index("count_color"), a_color=_COLORS.index(w[2]) + 1
            )
            n = sum(o.color == w[2] for o in objects)
        else:
            shape = _PLURAL[w[2]]
            g.update(
                qtype=1 + QTYPES.index("count_shape"), a_shape=SHAPES.index(shape) + 1
            )
            n = sum(o.shape == shape for o in objects)
        look["count"] = n + 1
    else:  # is the C1 S1 <relation> the C2 S2 ?
        a, b = _find(objects, w[2], w[3]), _find(objects, w[-3], w[-2])
        g.update(qtype=1 + QTYPES.index(w[4]), a_color=_obj(a)[0], a_shape=_obj(a)[1])
        g.update(b_color=_obj(b)[0], b_shape=_obj(b)[1])
        look.update(zip(("l_color", "l_shape", "l_row", "l_col"), _obj(a)))
        look.update(m_row=b.row + 1, m_col=b.col + 1)
    return np.array([*g.values(), *look.values()], np.int32)
