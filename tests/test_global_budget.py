"""The "global" budget policy: all spans ranked together, nothing merged across them."""

import mlx.core as mx
import numpy as np
import pytest

from restore_mlx import RestoreConfig
from restore_mlx.core.api import REDUCERS
from restore_mlx.core.ranking import RANKINGS, counts_from_order
from restore_mlx.core.segments import reduce_segments, whole
from restore_mlx.core.types import Segment
from restore_mlx.errors import RestoreError, UnsupportedMethod

SPANS = (Segment(0, 16, (4, 4), image=0), Segment(16, 36, (6, 6), image=1))


def _x(n, d=16, seed=0):
    return mx.random.normal((1, n, d), key=mx.random.key(seed))


def _scores(n, seed=1):
    k1, k2, k3 = mx.random.split(mx.random.key(seed), 3)
    return dict(
        cls_attention=mx.softmax(mx.random.normal((1, n), key=k1), axis=-1),
        text_attention=mx.softmax(mx.random.normal((1, n), key=k2), axis=-1),
        keys=mx.random.normal((1, n, 8), key=k3),
    )


def _per_span(red, spans=SPANS):
    """How many reduced tokens sit in each span."""
    positions = np.array(red.positions[0])
    return [int(np.sum((positions >= s.offset) & (positions < s.end))) for s in spans]


@pytest.mark.parametrize("method", sorted(REDUCERS))
def test_one_span_global_equals_proportional(method):
    x, scores = _x(36), _scores(36)
    args = dict(keep=0.25, restore=True, **scores)
    want = reduce_segments(x, whole(36, (6, 6)), method, **args)
    got = reduce_segments(x, whole(36, (6, 6)), method, budget_policy="global", **args)
    for a, b in zip(got.__dict__.values(), want.__dict__.values()):
        assert mx.array_equal(a, b).item()


@pytest.mark.parametrize("method", sorted(REDUCERS))
@pytest.mark.parametrize("tokens", [2, 7, 26, 51])
def test_global_keeps_the_exact_budget_and_merges_nothing_across_images(method, tokens):
    x, scores = _x(52, seed=tokens), _scores(52, seed=tokens)
    red = reduce_segments(x, SPANS, method, tokens=tokens, budget_policy="global",
                          restore=True, **scores)  # fmt: skip
    assert red.num_tokens == tokens
    assert min(_per_span(red)) >= 1
    assert int(mx.sum(red.sizes).item()) == 52
    # Every token's group sits in the token's own image.
    positions = np.array(red.positions[0])
    group_image = (positions[np.array(red.assignment[0])] >= 16).astype(int)
    assert group_image.tolist() == [0] * 16 + [1] * 36
    sizes = np.bincount(np.array(red.assignment[0]), minlength=tokens)
    assert sizes.tolist() == red.sizes[0].tolist()


def _duplicates_then_diverse(seed=0):
    """Image 0: 16 near-copies of one token; image 1: 36 random tokens."""
    one = _x(1, seed=seed)
    noise = 1e-3 * _x(16, seed=seed + 1)
    return mx.concatenate(
        [mx.repeat(one, 16, axis=1) + noise, _x(36, seed=seed + 2)], 1
    )


@pytest.mark.parametrize("method", ["divprune", "tome"])
def test_global_gives_the_diverse_image_the_budget(method):
    x = _duplicates_then_diverse()
    prop = reduce_segments(x, SPANS, method, tokens=26, restore=False)
    glob = reduce_segments(x, SPANS, method, tokens=26, restore=False,
                           budget_policy="global")  # fmt: skip
    assert _per_span(prop) == [8, 18]
    assert _per_span(glob) == [1, 25]  # the copies rank last: one token each image


def test_global_follows_text_attention_across_images():
    attention = mx.concatenate([mx.full((1, 16), 0.05), mx.full((1, 36), 0.001)], 1)
    red = reduce_segments(_x(52), SPANS, "fastv", tokens=13, restore=False,
                          text_attention=attention, budget_policy="global")  # fmt: skip
    assert _per_span(red) == [12, 1]  # 12 best in image 0, one kept in image 1
    assert np.array(red.positions[0]).tolist()[:12] == list(range(12))


@pytest.mark.parametrize("method", ["vispruner", "visionzip", "holov"])
def test_global_ranks_cls_attention_against_each_images_share(method):
    # Image 0 (36 tokens): 8 hold 40% of its attention, 1.8x its mean. Image 1 (16
    # tokens, so larger raw values) is flat. By share of its own image, image 0's
    # eight rank first; by raw value image 1's sixteen would.
    spans = (Segment(0, 36, (6, 6)), Segment(36, 16, (4, 4), image=1))
    image0 = mx.array([0.05] * 8 + [0.6 / 28] * 28)
    cls = mx.concatenate([image0, mx.full((16,), 1 / 16)])[None]
    args = dict(tokens=13, restore=False, cls_attention=cls)
    prop = reduce_segments(_x(52), spans, method, **args)
    glob = reduce_segments(_x(52), spans, method, budget_policy="global", **args)
    assert _per_span(prop, spans) == [9, 4]
    assert _per_span(glob, spans) == [8, 5]


def test_counts_take_each_spans_best_then_the_best_others():
    owner = np.array([0] * 5 + [1] * 5 + [2] * 5)
    assert counts_from_order(list(range(15)), owner, 3, 6) == [4, 1, 1]
    assert counts_from_order([14, 13, 0, 1, 2, 5], owner, 3, 6) == [3, 1, 2]
    assert counts_from_order([5, 6, 7, 8], owner, 3, 4) == [1, 2, 1]


@pytest.mark.parametrize("method", ["pool", "uniform"])
def test_content_blind_reducers_fall_back_to_proportional(method):
    x = _x(52)
    want = reduce_segments(x, SPANS, method, tokens=13)
    got = reduce_segments(x, SPANS, method, tokens=13, budget_policy="global")
    assert mx.array_equal(got.positions, want.positions).item()


def test_every_reducer_has_a_global_form_or_a_stated_fallback():
    assert set(REDUCERS) == set(RANKINGS) | {"pool", "uniform"}


def test_a_reducer_without_a_global_form_is_refused(monkeypatch):
    monkeypatch.setitem(REDUCERS, "novel", REDUCERS["divprune"])
    with pytest.raises(UnsupportedMethod, match="global.*'novel'"):
        reduce_segments(_x(52), SPANS, "novel", tokens=8, budget_policy="global")


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError, match="budget_policy must be one of"):
        reduce_segments(_x(52), SPANS, "divprune", tokens=8, budget_policy="globl")
    with pytest.raises(RestoreError, match="budget_policy must be one of"):
        RestoreConfig(budget_policy="everywhere")
    with pytest.raises(ValueError, match="one token in each of 2"):
        reduce_segments(_x(52), SPANS, "divprune", tokens=1, budget_policy="global")
    with pytest.raises(ValueError, match="B = 1"):
        reduce_segments(mx.concatenate([_x(52)] * 2), SPANS, "divprune", tokens=8,
                        budget_policy="global")  # fmt: skip


def test_the_cli_flag_sets_the_policy():
    from restore_mlx.generate_args import configure_parser, resolve_config

    parser = configure_parser()
    args = parser.parse_args(["--model", "m", "--prompt", "p", "--budget-policy",
                              "global"])  # fmt: skip
    config, _ = resolve_config(args, {})
    assert config.budget_policy == "global"
    args = parser.parse_args(["--model", "m", "--prompt", "p"])
    assert resolve_config(args, {})[0].budget_policy == "proportional"
    with pytest.raises(SystemExit):
        parser.parse_args(["--model", "m", "--budget-policy", "everywhere"])


def _counts(prepared):
    return _per_span(prepared.reduction, prepared.segments)


@pytest.mark.parametrize("method", ["divprune", "fastv"])
def test_the_policy_reaches_a_tiled_prompt(method):
    # Two images as four views (lfm2_vl): the recipe's policy decides the views'
    # budgets, and the model runs the reduced prompt exactly as pruning must (the
    # unpatched layers on the reduced prompt, removed keys masked, to the bit).
    from conftest import BUILDERS
    from test_calibration_model import expected_logits, patched_logits
    from test_integration import PRUNE

    import restore_mlx.integration as ri

    counts = {}
    for policy in ("proportional", "global"):
        model, sample = BUILDERS["lfm2_vl-2images"]()
        ri.apply(model, **{**PRUNE, "method": method, "keep": 0.3,
                           "budget_policy": policy})  # fmt: skip
        prepared = ri.prepare_tokens(model, sample)
        counts[policy] = _counts(prepared)
    assert sum(counts["global"]) == sum(counts["proportional"]) == 16
    assert counts["proportional"] == [5, 5, 3, 3]
    assert counts["global"] != counts["proportional"]
    ref_model, _ = BUILDERS["lfm2_vl-2images"]()
    got = patched_logits(model, prepared, [7, 11, 3])
    want = expected_logits("lfm2_vl-2images", ref_model, sample, prepared, [7, 11, 3],
                           size=False, dist=False)  # fmt: skip
    assert np.array_equal(got, want)
