"""Distinctive anchor merging against a numpy reference written from the formulas."""

import mlx.core as mx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from restore_mlx import reduce
from restore_mlx.core.anchors import anchor_merge, anchor_scores
from restore_mlx.core.ops import cosine


def reference_anchors(x, k, rule):
    """DESIGN.md section 1 step 2, token by token, in numpy."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    sim = np.where(np.eye(len(x), dtype=bool), 1.0, (sim + sim.T) / 2).astype(
        np.float32
    )
    rho = sim.sum(axis=1)
    n = len(x)
    delta = np.empty(n, dtype=np.float32)
    for i in range(n):
        if rule == "reference":
            others = [j for j in range(n) if rho[j] < rho[i]]
            delta[i] = 1 - max(sim[i, j] for j in others) if others else 1.0
        else:
            others = [j for j in range(n) if rho[j] > rho[i]]
            delta[i] = (
                1 - max(sim[i, j] for j in others) if others else 1 - sim[i].min()
            )
    score = rho * delta
    anchors = np.sort(np.argsort(-score, kind="stable")[:k])
    labels = np.argmax(sim[:, anchors], axis=1)
    labels[anchors] = np.arange(k)
    return anchors, labels, rho, score


def _well_separated(x, k, rule, gap=1e-4):
    """No density or anchor-score near-ties, which float rounding could order either way."""
    _, _, rho, score = reference_anchors(x, k, rule)
    if len(x) > 2 and np.diff(np.sort(rho)).min() < gap:  # n == 2 ties exactly
        return False
    score = np.sort(score)[::-1]
    return k == len(x) or score[k - 1] - score[k] > gap


def _partition(labels):
    return sorted(tuple(np.flatnonzero(labels == g)) for g in np.unique(labels))


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(2, 24),
    d=st.integers(2, 8),
    frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**16),
    rule=st.sampled_from(["reference", "classic"]),
)
def test_matches_numpy_reference(n, d, frac, seed, rule):
    rng = np.random.default_rng(seed)
    # Shared offset: post-projector features are mostly positively correlated.
    x = (rng.normal(size=(2, n, d)) + 0.5).astype(np.float32)
    k = max(1, min(n, round(frac * n)))
    anchors, labels = anchor_merge(mx.array(x), k, rule)
    for row in range(2):
        ref_a, ref_l, _, _ = reference_anchors(x[row], k, rule)
        assume(_well_separated(x[row], k, rule))
        assert np.array(anchors[row]).tolist() == ref_a.tolist()
        assert np.array(labels[row]).tolist() == ref_l.tolist()


@pytest.mark.parametrize("rule", ["reference", "classic"])
def test_reduce_anchors_and_restore_groups_match_reference(rule):
    rng = np.random.default_rng(1)
    x = (rng.normal(size=(2, 20, 6)) + 0.3).astype(np.float32)
    red = reduce(mx.array(x), "anchors", tokens=5, anchor_rule=rule)
    for row in range(2):
        _, ref_l, _, _ = reference_anchors(x[row], 5, rule)
        assert _partition(np.array(red.assignment[row])) == _partition(ref_l)
        assert np.array(red.merged[row]).all()
    # RESTORE: the tokens uniform leaves behind are merged exactly as the reference would.
    red = reduce(mx.array(x), "uniform", tokens=6, anchor_rule=rule)
    kept = (2 * np.arange(3) + 1) * 20 // 6
    rest = np.setdiff1d(np.arange(20), kept)
    for row in range(2):
        _, ref_l, _, _ = reference_anchors(x[row, rest], 3, rule)
        a = np.array(red.assignment[row])
        assert _partition(a[rest]) == _partition(ref_l)
        assert not set(a[kept]) & set(a[rest])


def _three_clusters_and_outliers(seed=0):
    rng = np.random.default_rng(seed)
    pts, label = [], []
    for c in range(3):
        axis = np.eye(5)[c]
        for _ in range(10):
            pts.append(axis + 0.2 * rng.normal(size=5) * np.r_[1, 1, 1, 0, 0])
            label.append(c)
    pts += [np.eye(5)[3], np.eye(5)[4]]  # two outliers, orthogonal to every cluster
    label += [-1, -1]
    return np.array(pts, dtype=np.float32), np.array(label)


def test_toy_rules_pick_differently():
    x, label = _three_clusters_and_outliers()
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    rho = (xn @ xn.T).sum(axis=1)
    members = [np.flatnonzero(label == c) for c in range(3)]
    cores = sorted(int(m[np.argmax(rho[m])]) for m in members)
    rims = sorted(int(m[np.argmin(rho[m])]) for m in members)
    classic, _ = anchor_merge(mx.array(x[None]), 3, "classic")
    reference, _ = anchor_merge(mx.array(x[None]), 3, "reference")
    # Classic density peaks: the densest token of each cluster.
    assert np.array(classic[0]).tolist() == cores
    # The authors' rule: similarity to LESS dense tokens favours each cluster's rim.
    assert np.array(reference[0]).tolist() == rims
    # With one more anchor, the reference rule also takes an outlier.
    more, _ = anchor_merge(mx.array(x[None]), 4, "reference")
    assert (label[np.array(more[0])] == -1).sum() == 1


def test_least_dense_token_gets_delta_one():
    x = mx.array(np.random.default_rng(2).normal(size=(1, 9, 4)).astype(np.float32))
    sim = cosine(x)
    rho = mx.sum(sim, axis=-1)
    score = anchor_scores(sim, "reference")
    low = int(mx.argmin(rho, axis=-1).item())
    assert score[0, low].item() == pytest.approx(rho[0, low].item(), rel=1e-6)


def test_every_token_joins_its_most_similar_anchor():
    x = mx.array(np.random.default_rng(3).normal(size=(2, 15, 5)).astype(np.float32))
    anchors, labels = anchor_merge(x, 4)
    sim = np.array(cosine(x))
    a, lab = np.array(anchors), np.array(labels)
    for row in range(2):
        assert (lab[row][a[row]] == np.arange(4)).all()
        others = np.setdiff1d(np.arange(15), a[row])
        best = sim[row][others][:, a[row]].max(axis=1)
        chosen = sim[row, others, a[row][lab[row][others]]]
        assert (chosen == best).all()
