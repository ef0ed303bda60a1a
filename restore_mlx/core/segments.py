"""Reduction over several segments of visual tokens: images, tiles, thumbnails.

A prompt's visual tokens (several images, or one image cut into tiles) are reduced
segment by segment, each with its own grid, so nothing merges across two images or
tiles and the similarity a reducer forms is per segment (blockwise), never N x N over
the whole prompt. A segment need not be contiguous: a grid whose rows are interrupted
by separators (``Segment.row_stride``) is one segment, its separators another.

The budget applies to the whole prompt. ``budget_policy`` says how it is shared by the
reducible segments: "proportional" (the default) in proportion to their tokens
(largest remainder, at least one token each); "global" where the reducer's ranking of
all their tokens together puts it (at least one token each; ``core.ranking`` says what
each reducer ranks by, and which fall back to "proportional").
"""

from typing import Sequence

import mlx.core as mx
import numpy as np

from ..config import BUDGET_POLICIES
from .api import REDUCERS, reduce
from .budget import resolve_budget
from .positions import identity
from .ranking import PROPORTIONAL_ONLY, global_budgets
from .scores import KNOWN_SCORES, check_scores
from .types import Reduction, Segment

# Scores that hold one value per visual token, sliced per segment.
_PER_TOKEN = ("cls_attention", "text_attention", "keys")


def split_tokens(lengths: Sequence[int], m: int) -> list:
    """Budgets for segments of ``lengths`` tokens that sum to ``m``: proportional to
    the lengths, remainders to the largest fractions, each in [1, length]."""
    _check_one_each(len(lengths), m)
    n = sum(lengths)
    exact = [m * length / n for length in lengths]
    out = [max(1, min(length, int(e))) for e, length in zip(exact, lengths)]
    order = sorted(range(len(lengths)), key=lambda i: out[i] - exact[i])
    while sum(out) != m:
        step = 1 if sum(out) < m else -1
        for i in order if step > 0 else reversed(order):
            if sum(out) == m:
                break
            if 1 <= out[i] + step <= lengths[i]:
                out[i] += step
    return out


def _check_one_each(segments: int, m: int) -> None:
    if m < segments:
        raise ValueError(
            f"a budget of {m} tokens cannot keep one token in each of "
            f"{segments} image segments: raise keep or tokens"
        )


def whole(n: int, grid=None) -> tuple:
    """One reducible segment over all ``n`` visual tokens."""
    return (Segment(0, n, grid),)


def reduce_segments(
    x,
    segments,
    method,
    *,
    keep=None,
    tokens=None,
    budget_policy="proportional",
    **kwargs,
):
    """``reduce`` applied segment by segment, as one Reduction over x [B, N, D].

    ``segments`` cover 0..N-1 in order. ``keep``/``tokens`` budget the reducible
    tokens of the whole prompt, shared by ``budget_policy`` (module docstring);
    per-token scores in ``kwargs`` ([B, N, ...]) are sliced per segment and each
    segment's own ``grid`` replaces any given one. Positions of the result index the
    whole visual token list.
    """
    if budget_policy not in BUDGET_POLICIES:
        raise ValueError(
            f"budget_policy must be one of {BUDGET_POLICIES}, got {budget_policy!r}"
        )
    _check_cover(segments, x.shape[1])
    reducible = [s for s in segments if s.reducible]
    n = sum(s.length for s in reducible)
    m = resolve_budget(n, keep=keep, tokens=tokens)
    budgets = iter(_budgets(x, reducible, method, m, budget_policy, kwargs))
    scores = {k: v for k, v in kwargs.items() if k != "grid"}
    parts = []
    for s in segments:
        part = _take(x, s)
        budget = next(budgets) if s.reducible else s.length
        if budget == s.length:
            parts.append(identity(part))
            continue
        parts.append(reduce(part, method, tokens=budget, grid=s.grid,
                            **_slice_scores(scores, [s])))  # fmt: skip
    return concatenate(parts, segments)


def _budgets(x, reducible, method, m, policy, kwargs) -> list:
    """Each reducible segment's budget under ``policy``, summing to m."""
    lengths = [s.length for s in reducible]
    if policy == "proportional" or len(reducible) == 1 or method in PROPORTIONAL_ONLY:
        return split_tokens(lengths, m)
    _check_one_each(len(lengths), m)
    if method not in REDUCERS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(REDUCERS)}")
    union = _take_all(x, reducible)
    needs = tuple(n for n in REDUCERS[method].needs if n != "grid")
    scores = {k: kwargs[k] for k in KNOWN_SCORES if k in kwargs and k != "grid"}
    scores = check_scores(_slice_scores(scores, reducible), method, needs, union.shape)
    owner = np.repeat(np.arange(len(lengths)), lengths)
    return global_budgets(union, scores, owner, method, m)


def _slice_scores(scores: dict, segments) -> dict:
    """``scores`` with every per-token map cut to the tokens of ``segments``."""
    out = dict(scores)
    for name in _PER_TOKEN:
        if out.get(name) is not None:
            out[name] = _take_all(out[name], segments)
    return out


def _take_all(x, segments):
    """The tokens of x [B, N, ...] of every segment, segment after segment."""
    if len(segments) == 1:
        return _take(x, segments[0])
    return mx.concatenate([_take(x, s) for s in segments], axis=1)


def _take(x, segment):
    """The segment's tokens of x [B, N, ...]."""
    if not segment.row_stride:
        return x[:, segment.offset : segment.offset + segment.length]
    return mx.take(x, mx.array(segment.indices().astype(np.int32)), axis=1)


def _check_cover(segments, n):
    seen = np.zeros(n + 1, dtype=np.int64)
    for s in segments:
        if s.length < 1:
            raise ValueError(f"segments must cover the {n} visual tokens in order")
        seen[np.minimum(s.indices(), n)] += 1
    if seen[n] or not np.all(seen[:n] == 1):
        raise ValueError(f"segments must cover the {n} visual tokens, each once")


def concatenate(parts, segments) -> Reduction:
    """One Reduction from per-segment ones: groups renumbered, positions mapped back
    through each segment's token indices, reduced tokens ordered by position (only
    interleaved segments need the reordering)."""
    base, assignment, positions = 0, [], []
    for part, s in zip(parts, segments):
        assignment.append(part.assignment + base)
        base += part.num_tokens
        if s.row_stride:
            index = mx.array(s.indices().astype(np.int32))
            positions.append(mx.take(index, part.positions))
        else:
            positions.append(part.positions + s.offset)
    red = Reduction(
        features=mx.concatenate([p.features for p in parts], axis=1),
        sizes=mx.concatenate([p.sizes for p in parts], axis=1),
        assignment=mx.concatenate(assignment, axis=1),
        positions=mx.concatenate(positions, axis=1),
        merged=mx.concatenate([p.merged for p in parts], axis=1),
    )
    if any(s.row_stride for s in segments):
        red = _by_position(red, np.concatenate([s.indices() for s in segments]))
    return red


def _by_position(red, tokens) -> Reduction:
    """``red``, built segment after segment over visual ``tokens`` (the index of each
    assignment column), with its columns in token order and its reduced tokens sorted
    by original position."""
    columns = mx.array(np.argsort(tokens, kind="stable").astype(np.int32))
    red = Reduction(**{**red.__dict__, "assignment": red.assignment[:, columns]})
    order = mx.argsort(red.positions, axis=1)
    rank = mx.argsort(order, axis=1)  # new index of each old reduced token
    pick = lambda a: mx.take_along_axis(a, order[..., None], axis=1)  # noqa: E731
    return Reduction(
        features=pick(red.features),
        sizes=mx.take_along_axis(red.sizes, order, axis=1),
        assignment=mx.take_along_axis(rank, red.assignment, axis=1),
        positions=mx.take_along_axis(red.positions, order, axis=1),
        merged=mx.take_along_axis(red.merged, order, axis=1),
    )
