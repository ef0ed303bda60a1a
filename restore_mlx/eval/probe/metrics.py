"""Per-question fidelity measures and their aggregation into result rows.

Every measure compares a reduced prefill with the unreduced one of the same question:
cosine similarity of the final hidden state at the answer position, and
KL(full || reduced) of the next-token distributions. The share of attention the answer
position pays to visual tokens is reported as measured (reduced and full side by side).
"""

import re

import mlx.core as mx
import numpy as np

_PUNCT = re.compile(r"[^\w\s]")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, single spaces: "Yes." equals "yes"."""
    return " ".join(_PUNCT.sub(" ", str(text).lower()).split())


def is_correct(prediction: str, answer: str, truncated: bool = False) -> bool:
    """Exact match after ``normalize_answer``; a ``truncated`` prediction (generation
    stopped by the token limit) also counts when the answer starts with it."""
    p, a = normalize_answer(prediction), normalize_answer(answer)
    if not p:
        return False
    if p == a:
        return True
    return truncated and (a + " ").startswith(p + " ")


def cosine(a: mx.array, b: mx.array) -> float:
    """Cosine similarity of two vectors (any leading batch-1 axes are flattened)."""
    a = a.reshape(-1).astype(mx.float32)
    b = b.reshape(-1).astype(mx.float32)
    den = mx.maximum(mx.linalg.norm(a) * mx.linalg.norm(b), 1e-12)
    return min(1.0, max(-1.0, float((mx.sum(a * b) / den).item())))


def kl_divergence(full_logits: mx.array, reduced_logits: mx.array) -> float:
    """KL(p_full || p_reduced) in nats for one position's logits."""
    p = full_logits.reshape(-1).astype(mx.float32)
    q = reduced_logits.reshape(-1).astype(mx.float32)
    if p.shape != q.shape:
        raise ValueError(f"logits of different sizes: {p.shape} vs {q.shape}")
    lp = p - mx.logsumexp(p)
    lq = q - mx.logsumexp(q)
    return max(0.0, float(mx.sum(mx.exp(lp) * (lp - lq)).item()))


MEASURES = ("accuracy", "visual_attention", "visual_attention_full", "cosine", "kl")


def aggregate(records: list, keys=("method", "variant", "keep")) -> list:
    """Rows of means per ``keys`` x question family, plus family "all".

    ``records`` are dicts with ``keys``, ``family``, ``correct`` (bool) and optionally
    the fidelity measures; a record with ``skipped`` set makes a skipped row instead.
    """
    groups = {}
    for r in records:
        k = tuple(r[name] for name in keys)
        for fam in (r["family"], "all"):
            groups.setdefault((*k, fam), []).append(r)
    rows = []
    for (*k, fam), recs in groups.items():
        row = dict(zip(keys, k), family=fam, n=len(recs))
        skipped = next((r["skipped"] for r in recs if r.get("skipped")), None)
        if skipped:
            rows.append({**row, "n": 0, "accuracy": None, "skipped": skipped})
            continue
        row["accuracy"] = float(np.mean([r["correct"] for r in recs]))
        for m in MEASURES[1:]:
            vals = [r[m] for r in recs if r.get(m) is not None]
            row[m] = float(np.mean(vals)) if vals else None
        for extra in ("visual_tokens", "prompt_tokens"):
            vals = [r[extra] for r in recs if r.get(extra) is not None]
            if vals:
                row[extra] = float(np.mean(vals))
        rows.append(row)
    return rows
