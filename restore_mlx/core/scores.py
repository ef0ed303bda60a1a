"""Checking the per-method inputs (``**scores``) once, before any reducer runs."""

import math
import numbers

import mlx.core as mx

KNOWN_SCORES = ("grid", "cls_attention", "text_attention", "keys", "seed")


def check_scores(scores: dict, method: str, needs: tuple, shape: tuple) -> dict:
    """The scores, checked and converted: a ValueError naming any problem.

    ``needs`` are the keywords ``method`` cannot do without ("grid" is satisfied by a
    square token count). Every keyword given is checked, needed or not, so a wrong
    shape is reported even at budgets where the method would not read it. Returns a
    new dict: attention maps as float32 [B, N], ``keys`` as float32 [B, N, Dk], ``grid``
    as (h, w) whenever it is given or needed, ``seed`` as int (default 0).
    """
    unknown = sorted(set(scores) - set(KNOWN_SCORES))
    if unknown:
        raise ValueError(
            f"unknown score keywords {unknown}; known: {list(KNOWN_SCORES)}"
        )
    b, n, _ = shape
    out = {"seed": _seed(scores.get("seed", 0))}
    for name in ("cls_attention", "text_attention"):
        if scores.get(name) is not None:
            out[name] = _token_map(scores[name], name, method, (b, n))
        elif name in needs:
            raise ValueError(f"{method} needs {name} of shape [B, N] = [{b}, {n}]")
    if scores.get("keys") is not None:
        out["keys"] = _keys(scores["keys"], b, n)
    if scores.get("grid") is not None or "grid" in needs:
        out["grid"] = _grid(scores.get("grid"), n, method)
    return out


def _finite(value: mx.array, name: str) -> mx.array:
    value = value.astype(mx.float32)
    if not mx.all(mx.isfinite(value)).item():
        raise ValueError(f"{name} has NaN or inf entries")
    return value


def _token_map(value, name: str, method: str, shape: tuple) -> mx.array:
    value = value if isinstance(value, mx.array) else mx.array(value)
    if tuple(value.shape) != shape:
        raise ValueError(
            f"{method} needs {name} of shape [B, N] = {list(shape)}, "
            f"got {tuple(value.shape)}"
        )
    return _finite(value, name)


def _keys(keys, b: int, n: int) -> mx.array:
    keys = keys if isinstance(keys, mx.array) else mx.array(keys)
    if keys.ndim != 3 or tuple(keys.shape[:2]) != (b, n):
        raise ValueError(
            f"keys must have shape [B, N, Dk] = [{b}, {n}, Dk], got {tuple(keys.shape)}"
        )
    return _finite(keys, "keys")


def _seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an int, got {seed!r}")
    return int(seed)


def _grid(grid, n: int, method: str) -> tuple:
    """The patch grid (h, w) with h * w == n: ``grid`` if given, else square if n is one."""
    if grid is None:
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(
                f"{method} needs grid=(h, w): {n} tokens are not a square grid"
            )
        return side, side
    try:
        h, w = (int(v) for v in grid)
    except (TypeError, ValueError):
        raise ValueError(f"grid must be a pair (h, w), got {grid!r}") from None
    if h < 1 or w < 1 or h * w != n:
        raise ValueError(f"grid {grid!r} does not hold {n} tokens (h * w must equal N)")
    return h, w
