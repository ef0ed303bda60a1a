"""Reduction over several segments of visual tokens: images, tiles, thumbnails.

A prompt's visual tokens (several images, or one image cut into tiles) are reduced
segment by segment, each with its own grid, so nothing merges across two images or
tiles and the similarity a reducer forms is per segment (blockwise), never N x N over
the whole prompt. A segment need not be contiguous: a grid whose rows are interrupted
by separators (``Segment.row_stride``) is one segment, its separators another. The budget applies to the whole prompt and is split over the
reducible segments in proportion to their tokens (largest remainder, at least one
token each).
"""

from typing import Sequence

import mlx.core as mx
import numpy as np

from .api import reduce
from .budget import resolve_budget
from .positions import identity
from .types import Reduction, Segment

# Scores that hold one value per visual token, sliced per segment.
_PER_TOKEN = ("cls_attention", "text_attention", "keys")


def split_tokens(lengths: Sequence[int], m: int) -> list:
    """Budgets for segments of ``lengths`` tokens that sum to ``m``: proportional to
    the lengths, remainders to the largest fractions, each in [1, length]."""
    if m < len(lengths):
        raise ValueError(
            f"a budget of {m} tokens cannot keep one token in each of "
            f"{len(lengths)} image segments: raise keep or tokens"
        )
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


def whole(n: int, grid=None) -> tuple:
    """One reducible segment over all ``n`` visual tokens."""
    return (Segment(0, n, grid),)


def reduce_segments(x, segments, method, *, keep=None, tokens=None, **kwargs):
    """``reduce`` applied segment by segment, as one Reduction over x [B, N, D].

    ``segments`` cover 0..N-1 in order. ``keep``/``tokens`` budget the reducible
    tokens of the whole prompt; per-token scores in ``kwargs`` ([B, N, ...]) are sliced
    per segment and each segment's own ``grid`` replaces any given one. Positions of the
    result index the whole visual token list.
    """
    _check_cover(segments, x.shape[1])
    reducible = [s for s in segments if s.reducible]
    n = sum(s.length for s in reducible)
    m = resolve_budget(n, keep=keep, tokens=tokens)
    budgets = iter(split_tokens([s.length for s in reducible], m))
    parts = []
    for s in segments:
        part = _take(x, s)
        budget = next(budgets) if s.reducible else s.length
        if budget == s.length:
            parts.append(identity(part))
            continue
        scores = {k: v for k, v in kwargs.items() if k != "grid"}
        for name in _PER_TOKEN:
            if scores.get(name) is not None:
                scores[name] = _take(scores[name], s)
        parts.append(reduce(part, method, tokens=budget, grid=s.grid, **scores))
    return concatenate(parts, segments)


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
