"""Reduction over several segments of visual tokens: images, tiles, thumbnails.

A prompt's visual tokens (several images, or one image cut into tiles) are reduced
segment by segment, each with its own grid, so nothing merges across two images or
tiles and the similarity a reducer forms is per segment (blockwise), never N x N over
the whole prompt. The budget applies to the whole prompt and is split over the
reducible segments in proportion to their tokens (largest remainder, at least one
token each).
"""

from typing import Sequence

import mlx.core as mx

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
        part = x[:, s.offset : s.offset + s.length]
        budget = next(budgets) if s.reducible else s.length
        if budget == s.length:
            parts.append(identity(part))
            continue
        scores = {k: v for k, v in kwargs.items() if k != "grid"}
        for name in _PER_TOKEN:
            if scores.get(name) is not None:
                scores[name] = scores[name][:, s.offset : s.offset + s.length]
        parts.append(reduce(part, method, tokens=budget, grid=s.grid, **scores))
    return concatenate(parts, [s.offset for s in segments])


def _check_cover(segments, n):
    at = 0
    for s in segments:
        if s.offset != at or s.length < 1:
            raise ValueError(f"segments must cover the {n} visual tokens in order")
        at += s.length
    if at != n:
        raise ValueError(f"segments cover {at} visual tokens, the prompt has {n}")


def concatenate(parts, offsets) -> Reduction:
    """One Reduction from per-segment ones: groups renumbered, positions shifted by
    each segment's ``offsets``."""
    base, assignment = 0, []
    for part in parts:
        assignment.append(part.assignment + base)
        base += part.num_tokens
    return Reduction(
        features=mx.concatenate([p.features for p in parts], axis=1),
        sizes=mx.concatenate([p.sizes for p in parts], axis=1),
        assignment=mx.concatenate(assignment, axis=1),
        positions=mx.concatenate(
            [p.positions + o for p, o in zip(parts, offsets)], axis=1
        ),
        merged=mx.concatenate([p.merged for p in parts], axis=1),
    )
