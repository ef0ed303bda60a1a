"""Token budgets: how many visual tokens survive, and how RESTORE splits them."""

import numbers


def resolve_budget(n: int, keep=None, tokens=None) -> int:
    """The number M of reduced tokens for ``n`` visual tokens.

    Exactly one of ``keep`` (a fraction in (0, 1], M = max(1, round(keep * n))) or
    ``tokens`` (an int in [1, n]) must be given; anything else raises ValueError.
    """
    if keep is None and tokens is None:
        raise ValueError("a budget is needed: pass keep (fraction) or tokens (count)")
    if keep is not None and tokens is not None:
        raise ValueError("pass only one budget: keep or tokens, not both")
    if tokens is not None:
        if isinstance(tokens, bool) or not isinstance(tokens, numbers.Integral):
            raise ValueError(f"tokens must be an int, got {tokens!r}")
        if not 1 <= tokens <= n:
            raise ValueError(
                f"tokens must be in [1, {n}] for {n} visual tokens, got {tokens}"
            )
        return int(tokens)
    if isinstance(keep, bool) or not isinstance(keep, numbers.Real):
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep!r}")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    return max(1, min(n, round(keep * n)))


def split_budget(m: int) -> tuple:
    """RESTORE's split of a budget of ``m`` tokens: (kept by the base, anchors).

    Half the budget (``m // 2``) goes to anchors. With ``m == 1`` the single token is an
    anchor, so every visual token is still accounted for (sizes sum to N).
    """
    if m < 1:
        raise ValueError(f"the budget must be at least 1 token, got {m}")
    anchors = max(1, m // 2)
    return m - anchors, anchors
