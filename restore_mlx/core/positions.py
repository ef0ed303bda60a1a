"""Original positions of reduced tokens, and putting reduced tokens in position order."""

import mlx.core as mx

from ..config import POSITION_RULES
from .ops import bincount, gather_rows, segment_mean
from .types import Reduction


def group_positions(assignment: mx.array, sizes: mx.array, rule: str) -> mx.array:
    """Position [B, M] of each group: an original index chosen from its members by ``rule``.

    "median" is the lower median member, "first"/"last" the smallest/largest member, all
    real member indices. "mean" is the members' mean index rounded half up; it need not be
    a member and two groups may share it.
    """
    if rule not in POSITION_RULES:
        raise ValueError(f"position_rule must be one of {POSITION_RULES}, got {rule!r}")
    b, n = assignment.shape
    m = sizes.shape[1]
    idx = mx.arange(n, dtype=mx.int32)
    if rule == "mean":
        total = mx.zeros((b, m), dtype=mx.float32)
        flat = (assignment + (mx.arange(b, dtype=mx.int32) * m)[:, None]).reshape(-1)
        total = total.reshape(-1).at[flat].add(mx.tile(idx, (b,)).astype(mx.float32))
        mean = total.reshape(b, m) / sizes.astype(mx.float32)
        return mx.floor(mean + 0.5).astype(mx.int32)
    # Distinct keys: sorting lists every group's members together, each in index order.
    order = mx.argsort(assignment * n + idx, axis=1).astype(mx.int32)
    start = mx.cumsum(sizes, axis=1) - sizes
    offset = {"first": 0, "median": (sizes - 1) // 2, "last": sizes - 1}[rule]
    return mx.take_along_axis(order, start + offset, axis=1)


def finalize(x, assignment, m, *, rule, features=None, positions=None, merged=None):
    """The Reduction for groups labelled 0..m-1 by ``assignment`` [B, N], in position order.

    ``features`` defaults to the members' mean, ``positions`` to ``group_positions`` under
    ``rule`` and ``merged`` to all False. Groups are re-labelled so positions ascend.
    """
    b = x.shape[0]
    assignment = assignment.astype(mx.int32)
    sizes = bincount(assignment, m)
    if features is None:
        features = segment_mean(x, assignment, m)
    if positions is None:
        positions = group_positions(assignment, sizes, rule)
    if merged is None:
        merged = mx.zeros((b, m), dtype=mx.bool_)
    order = mx.argsort(positions, axis=1).astype(mx.int32)
    relabel = mx.argsort(order, axis=1).astype(mx.int32)
    return Reduction(
        features=gather_rows(features, order),
        sizes=mx.take_along_axis(sizes, order, axis=1),
        assignment=mx.take_along_axis(relabel, assignment, axis=1),
        positions=mx.take_along_axis(positions, order, axis=1).astype(mx.int32),
        merged=mx.take_along_axis(merged, order, axis=1),
    )


def identity(x: mx.array) -> Reduction:
    """The Reduction that keeps every token as it is (budget M == N)."""
    b, n, _ = x.shape
    ar = mx.broadcast_to(mx.arange(n, dtype=mx.int32), (b, n))
    return Reduction(
        features=x,
        sizes=mx.ones((b, n), dtype=mx.int32),
        assignment=ar,
        positions=ar,
        merged=mx.zeros((b, n), dtype=mx.bool_),
    )
