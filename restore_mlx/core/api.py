"""The public entry point: ``reduce(x, method, ...)`` and the ``REDUCERS`` registry."""

from collections.abc import Callable
from dataclasses import dataclass

import mlx.core as mx

from ..config import ANCHOR_RULES, POSITION_RULES
from . import mergers, pruners, spatial
from .anchors import token_anchors
from .budget import resolve_budget, split_budget
from .ops import Tokens, complement, gather_rows, segment_mean
from .positions import finalize, identity
from .scores import check_scores
from .types import Reduction

# Group positions are found by sorting label * N + index in int32.
_MAX_TOKENS = 46340


@dataclass(frozen=True)
class Reducer:
    """How a method reduces, and which ``**scores`` it reads.

    ``select(tokens, m, scores)`` picks m kept tokens (pruning; also RESTORE's base
    part); ``group(tokens, m, scores)`` labels every token with one of m groups
    (merging). ``needs`` are required score keywords ("grid" may be omitted for a
    square grid), ``optional`` the ones read when given.
    """

    select: Callable | None = None
    group: Callable | None = None
    needs: tuple = ()
    optional: tuple = ()

    @property
    def kind(self) -> str:
        """Either "prune" (features kept as they are) or "merge" (features averaged)."""
        return "merge" if self.group is not None or self.select is None else "prune"


REDUCERS = {
    "tome": Reducer(group=mergers.group_tome),
    "pool": Reducer(group=spatial.group_pool, needs=("grid",)),
    "divprune": Reducer(select=pruners.select_divprune),
    "vispruner": Reducer(select=pruners.select_vispruner, needs=("cls_attention",)),
    "holov": Reducer(select=spatial.select_holov, needs=("cls_attention", "grid")),
    "visionzip": Reducer(
        select=mergers.select_visionzip,
        group=mergers.group_visionzip,
        needs=("cls_attention",),
    ),
    "fastv": Reducer(select=pruners.select_fastv, needs=("text_attention",)),
    "dart": Reducer(select=pruners.select_dart, optional=("keys",)),
    "anchors": Reducer(),  # distinctive anchor merging alone, see _base
    "random": Reducer(select=pruners.select_random, optional=("seed",)),
    "uniform": Reducer(select=pruners.select_uniform),
}


def _check_x(x) -> mx.array:
    if not isinstance(x, mx.array):
        raise ValueError(
            f"x must be an mx.array of shape [B, N, D], got {type(x).__name__}"
        )
    if x.ndim != 3:
        raise ValueError(
            f"x must have shape [B, N, D], got {x.ndim} dims {tuple(x.shape)}"
        )
    b, n, d = x.shape
    if b == 0 or n == 0 or d == 0:
        raise ValueError(
            f"x is empty: shape {tuple(x.shape)} (B, N and D must be >= 1)"
        )
    if n > _MAX_TOKENS:
        raise ValueError(f"at most {_MAX_TOKENS} visual tokens per image, got {n}")
    if not mx.issubdtype(x.dtype, mx.floating):
        raise ValueError(f"x must be floating point, got {x.dtype}")
    # One sync to validate; a NaN would otherwise silently poison every similarity.
    if not mx.all(mx.isfinite(x)).item():
        raise ValueError("x has NaN or inf features")
    return x


def _base(tok, spec, m, rule, anchor_rule, scores, method):
    """The method alone at budget m."""
    x = tok.x
    if method == "anchors":
        _, labels = token_anchors(tok, m, anchor_rule)
        merged = mx.ones((x.shape[0], m), dtype=mx.bool_)
        return finalize(x, labels, m, rule=rule, merged=merged)
    if spec.group is not None:
        return finalize(x, spec.group(tok, m, scores), m, rule=rule)
    kept = spec.select(tok, m, scores)
    # Pruning keeps features as they are; the coverage groups are only bookkeeping,
    # and a kept token sits at its own index whatever the rule.
    return finalize(
        x,
        pruners.cover(tok, kept),
        m,
        rule=rule,
        features=gather_rows(x, kept),
        positions=kept,
    )


def _restore(tok, spec, m, rule, anchor_rule, scores):
    """RESTORE: the base keeps m - k tokens, the rest are merged into k anchors."""
    x = tok.x
    b, n, _ = x.shape
    m_keep, k = split_budget(m)
    kept = spec.select(tok, m_keep, scores) if m_keep else mx.zeros((b, 0), mx.int32)
    rest = complement(kept, n)
    _, local = token_anchors(tok, k, anchor_rule, rest)
    labels = mx.zeros((b, n), dtype=mx.int32)
    if m_keep:
        own = mx.broadcast_to(mx.arange(m_keep, dtype=mx.int32), kept.shape)
        labels = mx.put_along_axis(labels, kept, own, axis=1)
    labels = mx.put_along_axis(labels, rest, m_keep + local, axis=1)
    merged = mx.broadcast_to(mx.arange(m) >= m_keep, (b, m))
    return finalize(x, labels, m, rule=rule, merged=merged)


def reduce(
    x,
    method,
    *,
    keep=None,
    tokens=None,
    restore=True,
    anchors=True,
    anchor_rule="reference",
    position_rule="median",
    **scores,
) -> Reduction:
    """Reduce the visual tokens x [B, N, D] to M tokens with ``method``.

    The budget is exactly one of ``keep`` (fraction in (0, 1]; M = max(1, round(keep*N)))
    or ``tokens`` (int in [1, N]). With ``restore`` and ``anchors`` (RESTORE), the base
    keeps M - k tokens and distinctive anchor merging (``anchor_rule``) merges all the
    others into k = M // 2 anchors (k = 1 when M == 1). Merging methods (tome, pool,
    anchors) drop nothing, so for them RESTORE's anchors change nothing: they run at the
    full budget, as with ``restore=False`` or ``anchors=False``. visionzip under RESTORE
    keeps its dominant tokens and lets the anchors replace its contextual merge.

    ``position_rule`` picks each group's position: "median" (lower median member),
    "first", "last" or "mean" (mean index rounded half up; may tie, then order among
    equals follows the sort). Kept tokens of pruning methods sit at their own index.
    Scores: ``grid=(h, w)``, ``cls_attention`` [B, N], ``text_attention`` [B, N],
    ``keys`` [B, N, Dk], ``seed``. Bad input raises ValueError.
    """
    if method not in REDUCERS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(REDUCERS)}")
    if anchor_rule not in ANCHOR_RULES:
        raise ValueError(
            f"anchor_rule must be one of {ANCHOR_RULES}, got {anchor_rule!r}"
        )
    if position_rule not in POSITION_RULES:
        raise ValueError(
            f"position_rule must be one of {POSITION_RULES}, got {position_rule!r}"
        )
    x = _check_x(x)
    spec = REDUCERS[method]
    scores = check_scores(scores, method, spec.needs, x.shape)
    m = resolve_budget(x.shape[1], keep=keep, tokens=tokens)
    if m == x.shape[1]:
        return identity(x)
    tok = Tokens(x)
    if restore and anchors and spec.select is not None:
        return _restore(tok, spec, m, position_rule, anchor_rule, scores)
    return _base(tok, spec, m, position_rule, anchor_rule, scores, method)


def keeps_tokens_as_is(method, *, restore=True, anchors=True) -> bool:
    """Whether ``reduce`` with these settings outputs the base's kept tokens as they are
    (pruning without RESTORE's anchors) rather than group means."""
    return REDUCERS[method].kind == "prune" and not (restore and anchors)


def reduce_alongside(
    red: Reduction, x: mx.array, method, *, restore=True, anchors=True
) -> mx.array:
    """Per-token features x [B, N, D'] reduced exactly as ``reduce`` reduced the tokens
    into ``red`` -> [B, M, D']: the same groups, sizes and order.

    For other feature levels of the same tokens (e.g. Qwen3-VL's deepstack features):
    a kept token's own row where the method keeps tokens as they are, else the mean of
    its group's members (the size-weighted mean of any earlier merge).
    """
    if x.ndim != 3 or x.shape[:2] != red.assignment.shape:
        raise ValueError(
            f"x must have shape [B, N, D] with [B, N] = {tuple(red.assignment.shape)}, "
            f"got {tuple(x.shape)}"
        )
    if keeps_tokens_as_is(method, restore=restore, anchors=anchors):
        return gather_rows(x, red.positions)
    return segment_mean(x, red.assignment, red.num_tokens)
