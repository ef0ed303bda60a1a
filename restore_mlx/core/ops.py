"""Small batched building blocks shared by every reducer (pure mlx.core)."""

import mlx.core as mx

_EPS = 1e-12
# Similarity blocks hold this many rows against all N tokens at once: O(block x N)
# memory instead of N x N on very large spans (a 6,561-token tile is 172 MB per N x N).
SIM_BLOCK = 256


def normalize(x: mx.array) -> mx.array:
    """Rows of ``x`` scaled to unit L2 norm, in float32 (zero rows stay zero)."""
    x = x.astype(mx.float32)
    return x * mx.rsqrt(mx.maximum(mx.sum(x * x, axis=-1, keepdims=True), _EPS))


def cosine(a: mx.array, b: mx.array = None) -> mx.array:
    """Batched cosine similarity [B, Na, Nb] between the rows of ``a`` and ``b``."""
    an = normalize(a)
    bn = an if b is None else normalize(b)
    return an @ bn.swapaxes(-1, -2)


def best_match(a: mx.array, b: mx.array, block: int = SIM_BLOCK):
    """(max [B, Na], argmax [B, Na] int32) of the cosine similarity of each row of
    ``a`` to the rows of ``b``, formed ``block`` rows of ``a`` at a time."""
    an, bt = normalize(a), normalize(b).swapaxes(-1, -2)
    best, arg = [], []
    for start in range(0, a.shape[1], block):
        sim = an[:, start : start + block] @ bt
        best.append(mx.max(sim, axis=-1))
        arg.append(mx.argmax(sim, axis=-1).astype(mx.int32))
        if a.shape[1] > block:
            mx.eval(best[-1], arg[-1])  # frees the block before the next one
    return mx.concatenate(best, axis=1), mx.concatenate(arg, axis=1)


def nearest_other(xn: mx.array, block: int = SIM_BLOCK) -> mx.array:
    """Highest cosine similarity [N] of each unit row of xn [N, D] to another row
    (-inf for a single row), formed one ``block`` x N block at a time."""
    n = xn.shape[0]
    ids = mx.arange(n)
    nearest = []
    for start in range(0, n, block):
        sim = xn[start : start + block] @ xn.T
        own = ids[start : start + block, None] == ids[None, :]
        nearest.append(mx.max(mx.where(own, -mx.inf, sim), axis=-1))
        mx.eval(nearest[-1])  # frees the block before the next one
    return mx.concatenate(nearest)


def gather_rows(x: mx.array, idx: mx.array) -> mx.array:
    """``x[b, idx[b]]`` for x [B, N, D] and idx [B, K] -> [B, K, D]."""
    b, n, d = x.shape
    # A flat row gather is far faster than take_along_axis with a broadcast index.
    flat = (idx + (mx.arange(b, dtype=mx.int32) * n)[:, None]).reshape(-1)
    return mx.take(x.reshape(b * n, d), flat, axis=0).reshape(b, idx.shape[1], d)


def _flat(labels: mx.array, m: int) -> mx.array:
    # Offsetting each row's labels by b * m turns a batched scatter into one flat scatter.
    b = labels.shape[0]
    return (labels + (mx.arange(b, dtype=mx.int32) * m)[:, None]).reshape(-1)


def bincount(labels: mx.array, m: int) -> mx.array:
    """Per-row counts [B, m] (int32) of labels [B, N] with values in [0, m)."""
    b, n = labels.shape
    ones = mx.ones((b * n,), dtype=mx.int32)
    return (
        mx.zeros((b * m,), dtype=mx.int32).at[_flat(labels, m)].add(ones).reshape(b, m)
    )


def segment_mean(x: mx.array, labels: mx.array, m: int) -> mx.array:
    """Mean [B, m, D] of the rows of x [B, N, D] sharing a label; accumulated in float32.

    This is the size-weighted mean of any earlier merges, since every original token
    has size 1. Labels must cover all of 0..m-1 (no empty groups).
    """
    b, n, d = x.shape
    flat = x.astype(mx.float32).reshape(b * n, d)
    sums = mx.zeros((b * m, d), dtype=mx.float32).at[_flat(labels, m)].add(flat)
    counts = bincount(labels, m).astype(mx.float32)
    return (sums.reshape(b, m, d) / counts[..., None]).astype(x.dtype)


def complement(idx: mx.array, n: int) -> mx.array:
    """Indices [B, n - K] (ascending) of the tokens not in idx [B, K]."""
    b, k = idx.shape
    taken = mx.zeros((b, n), dtype=mx.int32)
    taken = mx.put_along_axis(taken, idx, mx.ones_like(idx), axis=1)
    # Keys are distinct, so sorting them puts untaken tokens first, in index order.
    keys = taken * n + mx.arange(n, dtype=mx.int32)
    return mx.argsort(keys, axis=1)[:, : n - k].astype(mx.int32)


def top_indices(score: mx.array, k: int) -> mx.array:
    """Indices [B, k] (int32, ascending) of the k largest scores per row.

    Exact ties go to the lower index wherever the sort is stable (mlx's CPU sort is).
    """
    top = mx.argsort(-score.astype(mx.float32), axis=1)[:, :k]
    return mx.sort(top, axis=1).astype(mx.int32)


def rows_to_labels(idx: mx.array, n: int, labels: mx.array) -> mx.array:
    """An assignment [B, n] with ``out[b, idx[b, j]] = labels[b, j]`` (idx covers 0..n-1)."""
    out = mx.zeros((idx.shape[0], n), dtype=mx.int32)
    return mx.put_along_axis(out, idx, labels.astype(mx.int32), axis=1)


class Tokens:
    """Features x [B, N, D] with their cosine similarity [B, N, N], built at most once.

    Several stages (a base reducer, its bookkeeping, anchor merging) need similarities
    of the same tokens; once one stage has built the full matrix the others slice it
    instead of running another N x N x D matmul.
    """

    def __init__(self, x: mx.array):
        self.x = x
        self._sim = None

    @property
    def has_sim(self) -> bool:
        """Whether the full matrix is built (slicing it is then free)."""
        return self._sim is not None

    @property
    def sim(self) -> mx.array:
        if self._sim is None:
            self._sim = cosine(self.x)
        return self._sim

    def sim_to(self, idx: mx.array) -> mx.array:
        """Similarity [B, N, K] of every token to the tokens idx [B, K]."""
        if self._sim is None:
            return cosine(self.x, gather_rows(self.x, idx))
        return mx.take_along_axis(self._sim, idx[:, None, :], axis=2)

    def sub_sim(self, idx: mx.array) -> mx.array:
        """Similarity [B, K, K] among the tokens idx [B, K]."""
        if self._sim is None:
            return cosine(gather_rows(self.x, idx))
        return mx.take_along_axis(gather_rows(self._sim, idx), idx[:, None, :], axis=2)
