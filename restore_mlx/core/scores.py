"""Checking the per-method inputs (``**scores``) that some reducers need."""

import math

import mlx.core as mx

KNOWN_SCORES = ("grid", "cls_attention", "text_attention", "keys", "seed")


def check_known(scores: dict) -> None:
    """Reject score keywords no reducer understands (a typo would silently be ignored)."""
    unknown = sorted(set(scores) - set(KNOWN_SCORES))
    if unknown:
        raise ValueError(
            f"unknown score keywords {unknown}; known: {list(KNOWN_SCORES)}"
        )


def token_scores(scores: dict, name: str, method: str, b: int, n: int) -> mx.array:
    """The per-token score ``name`` as a finite float32 [B, N] array, or a ValueError."""
    value = scores.get(name)
    if value is None:
        raise ValueError(f"{method} needs {name} of shape [B, N] = [{b}, {n}]")
    value = mx.array(value) if not isinstance(value, mx.array) else value
    if tuple(value.shape) != (b, n):
        raise ValueError(
            f"{method} needs {name} of shape [B, N] = [{b}, {n}], got {tuple(value.shape)}"
        )
    value = value.astype(mx.float32)
    if not mx.all(mx.isfinite(value)).item():
        raise ValueError(f"{name} has NaN or inf entries")
    return value


def keys_or_x(scores: dict, x: mx.array) -> mx.array:
    """dart's ``keys`` [B, N, Dk] (finite) when given, else the features themselves."""
    keys = scores.get("keys")
    if keys is None:
        return x
    keys = mx.array(keys) if not isinstance(keys, mx.array) else keys
    if keys.ndim != 3 or tuple(keys.shape[:2]) != tuple(x.shape[:2]):
        raise ValueError(
            f"keys must have shape [B, N, Dk] = [{x.shape[0]}, {x.shape[1]}, Dk]"
        )
    if not mx.all(mx.isfinite(keys)).item():
        raise ValueError("keys has NaN or inf entries")
    return keys


def grid_shape(scores: dict, n: int, method: str) -> tuple:
    """The patch grid (h, w) with h * w == n: ``grid`` if given, else square if n is one."""
    grid = scores.get("grid")
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
