"""Bad input to ``reduce`` raises ValueError naming the problem."""

import mlx.core as mx
import numpy as np
import pytest

from restore_mlx import REDUCERS, reduce

B, N, D = 2, 16, 8


@pytest.fixture
def x():
    return mx.array(np.random.default_rng(0).normal(size=(B, N, D)).astype(np.float32))


@pytest.mark.parametrize(
    "budget, match",
    [
        (dict(keep=0.0), "keep"),
        (dict(keep=-0.5), "keep"),
        (dict(keep=1.5), "keep"),
        (dict(keep="half"), "keep"),
        (dict(tokens=0), "tokens"),
        (dict(tokens=-3), "tokens"),
        (dict(tokens=N + 1), "tokens"),
        (dict(tokens=2.5), "tokens"),
        (dict(tokens=True), "tokens"),
        (dict(), "budget"),
        (dict(keep=0.5, tokens=4), "only one"),
    ],
)
def test_bad_budgets(x, budget, match):
    with pytest.raises(ValueError, match=match):
        reduce(x, "divprune", **budget)


@pytest.mark.parametrize(
    "shape, match",
    [
        ((0, N, D), "empty"),
        ((B, 0, D), "empty"),
        ((B, N, 0), "empty"),
        ((N, D), "shape"),
    ],
)
def test_empty_or_misshaped_input(shape, match):
    with pytest.raises(ValueError, match=match):
        reduce(mx.zeros(shape), "divprune", tokens=1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("restore", [False, True])
def test_non_finite_features(x, bad, restore):
    x = x.at[1, 3, 2].add(bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        reduce(x, "tome", tokens=4, restore=restore)


def test_non_mlx_and_integer_input(x):
    with pytest.raises(ValueError, match="mx.array"):
        reduce(np.array(x), "divprune", tokens=4)
    with pytest.raises(ValueError, match="floating"):
        reduce(x.astype(mx.int32), "divprune", tokens=4)


def test_unknown_method_lists_the_reducers(x):
    with pytest.raises(ValueError, match="known: " + ", ".join(REDUCERS)):
        reduce(x, "nope", tokens=4)


def test_unknown_rules_and_score_keywords(x):
    with pytest.raises(ValueError, match="anchor_rule"):
        reduce(x, "divprune", tokens=4, anchor_rule="densest")
    with pytest.raises(ValueError, match="position_rule"):
        reduce(x, "divprune", tokens=4, position_rule="centre")
    with pytest.raises(ValueError, match="cls_atention"):
        reduce(x, "vispruner", tokens=4, cls_atention=mx.ones((B, N)))


@pytest.mark.parametrize(
    "method, name",
    [
        ("vispruner", "cls_attention"),
        ("holov", "cls_attention"),
        ("visionzip", "cls_attention"),
        ("fastv", "text_attention"),
    ],
)
@pytest.mark.parametrize("restore", [False, True])
def test_missing_or_misshaped_scores(x, method, name, restore):
    with pytest.raises(ValueError, match=f"{method} needs {name} of shape \\[B, N\\]"):
        reduce(x, method, tokens=4, restore=restore)
    with pytest.raises(ValueError, match=f"{method} needs {name}.*got \\(2, 15\\)"):
        reduce(x, method, tokens=4, restore=restore, **{name: mx.ones((B, N - 1))})
    bad = mx.ones((B, N)).at[0, 0].add(float("nan"))
    with pytest.raises(ValueError, match=f"{name} has NaN"):
        reduce(x, method, tokens=4, restore=restore, **{name: bad})


def test_grid_errors():
    x = mx.ones((1, 12, 4))
    with pytest.raises(ValueError, match="pool needs grid"):
        reduce(x, "pool", tokens=3)
    with pytest.raises(ValueError, match="h \\* w must equal N"):
        reduce(x, "pool", tokens=3, grid=(3, 5))
    with pytest.raises(ValueError, match="grid must be a pair"):
        reduce(x, "pool", tokens=3, grid=12)
    with pytest.raises(ValueError, match="holov needs grid"):
        reduce(x, "holov", tokens=3, cls_attention=mx.ones((1, 12)))


def test_bad_keys_and_seed(x):
    with pytest.raises(ValueError, match="keys must have shape"):
        reduce(x, "dart", tokens=4, keys=mx.ones((B, N - 1, 3)))
    with pytest.raises(ValueError, match="seed must be an int"):
        reduce(x, "random", tokens=4, seed=0.5)


@pytest.mark.parametrize("keep", [1.0, 0.5])
def test_scores_are_checked_at_every_budget(x, keep):
    # Even when nothing is removed, a missing or misshaped score is an error.
    with pytest.raises(ValueError, match="vispruner needs cls_attention"):
        reduce(x, "vispruner", keep=keep)
    with pytest.raises(ValueError, match="text_attention of shape"):
        reduce(x, "divprune", keep=keep, text_attention=mx.ones((B, 3)))


def test_registry_describes_each_method():
    assert REDUCERS["vispruner"].needs == ("cls_attention",)
    assert REDUCERS["fastv"].needs == ("text_attention",)
    assert REDUCERS["dart"].optional == ("keys",)
    kinds = {name: spec.kind for name, spec in REDUCERS.items()}
    assert {n for n, k in kinds.items() if k == "merge"} == {
        "tome",
        "pool",
        "visionzip",
        "anchors",
    }
