"""Tiled images (idefics3/smolvlm, lfm2_vl): segments per view, and the invariant that
holds for pruning in a hybrid (convolution + attention) language model."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import BUILDERS
from test_calibration_model import expected_logits, patched_logits
from test_integration import PRUNE

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for
from restore_mlx.adapters.contract import ImageSpan
from restore_mlx.adapters.patching import has_attention
from restore_mlx.adapters.tiles import last_views, view_segments

DECODE = [7, 11, 3]

# case -> [(offset, length, grid, image)] of every view
VIEWS = {
    "smolvlm": [(0, 16, (4, 4), 0), (16, 16, (4, 4), 0), (32, 16, (4, 4), 0)],
    "lfm2-vl": [(0, 16, (4, 4), 0), (16, 16, (4, 4), 0), (32, 12, (3, 4), 0)],
    "lfm2_vl-2images": [
        (0, 16, (4, 4), 0), (16, 16, (4, 4), 0), (32, 12, (3, 4), 0),
        (44, 9, (3, 3), 1),
    ],
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(VIEWS))
def test_every_view_is_a_segment_on_its_token_grid(case):
    model, sample = BUILDERS[case]()
    out = adapter_for(model).encode(model, sample["pixel_values"], sample)
    got = [(s.offset, s.length, s.grid, s.image) for s in out.segments]
    assert got == VIEWS[case]
    assert out.features.shape[1] == sum(s.length for s in out.segments)


def test_views_are_grouped_into_images_by_their_markers():
    # idefics3: the marker before the last view (<global-img>, 7) ends each image.
    ids = mx.array([[1, 5, 9, 9, 7, 9, 9, 3, 5, 9, 9, 7, 9, 9, 4]])
    runs = (ImageSpan(2, 2), ImageSpan(5, 2), ImageSpan(9, 2), ImageSpan(12, 2))
    assert last_views(ids, runs, "before") == [False, True, False, True]
    # lfm2_vl: the marker after the last view (<|image_end|>, 8) does.
    ids = mx.array([[1, 6, 9, 9, 5, 9, 9, 8, 3, 6, 9, 9, 5, 9, 9, 8, 4]])
    runs = (ImageSpan(2, 2), ImageSpan(5, 2), ImageSpan(10, 2), ImageSpan(13, 2))
    assert last_views(ids, runs, "after") == [False, True, False, True]
    segments = view_segments([(1, 2)] * 4, [2] * 4, runs, [False, True, False, True])
    assert [s.image for s in segments] == [0, 0, 1, 1]
    # Two views in one run (no markers between tiles): both in that run's image.
    segments = view_segments([(1, 1)] * 4, [1] * 4, runs[:2], [True, True])
    assert [s.image for s in segments] == [0, 0, 1, 1]


def test_only_attention_layers_are_patched():
    model, _ = BUILDERS["lfm2-vl"]()
    ri.apply(model)
    layers = adapter_for(model).layers(model)
    patched = [
        getattr(layer.self_attn, "_restore_layer", None)
        for layer in layers
        if has_attention(layer)
    ]
    assert patched == [0, 1]  # numbered among attention layers: 0 is the first
    assert not any(has_attention(layer) for layer in layers[::2])  # conv layers
    ri.remove(model)
    assert all(not hasattr(layer.get("self_attn"), "_restore") for layer in layers)


@pytest.mark.parametrize("case", ["lfm2-vl", "lfm2_vl-2images"])
def test_hybrid_pruning_equals_unpatched_layers_on_the_reduced_prompt(case):
    # The invariant that holds where convolutions see every token: pruning at the
    # original positions (no bias) equals the unpatched layers fed the reduced prompt
    # (convolutions) and attending at those same positions (attention at full length
    # with the removed keys masked out), at every prompt position and decode step.
    model, sample = BUILDERS[case]()
    ref_model, _ = BUILDERS[case]()
    ri.apply(model, **PRUNE)
    prepared = ri.prepare_tokens(model, sample)
    assert not mx.any(prepared.reduction.merged).item()
    got = patched_logits(model, prepared, DECODE)
    want = expected_logits(
        case, ref_model, sample, prepared, DECODE, size=False, dist=False
    )
    assert np.array_equal(got, want)  # to the bit, as llava's pruning invariant
    # Re-indexed positions (the base as usually deployed) do not.
    ri.apply(model, **{**PRUNE, "positions": False})
    reindexed = patched_logits(model, ri.prepare_tokens(model, sample), DECODE)
    assert not np.array_equal(reindexed[-len(DECODE) :], want[-len(DECODE) :])


@pytest.mark.parametrize("name", ["smolvlm-256m", "lfm2-vl-450m"])
def test_bench_requests_of_the_published_shapes_are_tiled(name):
    # The published configs at toy widths: the synthetic request is cut into its
    # views exactly as the adapters read them (3 views, one image).
    from restore_mlx.bench.configs import get_config
    from restore_mlx.bench.subject import build_model, synthetic_sample

    config, side, _ = get_config(name)
    small = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
    config["text_config"].update(small, block_dim=64, block_ff_dim=96)
    config["vision_config"].update(hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2)  # fmt: skip
    config["bench_views"] = [(8, 8)] * 3
    config["vision_config"]["image_size"] = 8 * config["vision_config"]["patch_size"]
    sample, n = synthetic_sample(config, side)
    config.pop("bench_views")
    model = build_model(config)
    ri.apply(model, method="divprune", keep=0.5)
    prepared = ri.prepare_tokens(model, sample)
    assert [s.image for s in prepared.segments] == [0, 0, 0]
    assert (
        sum(s.length for s in prepared.segments) == n == prepared.visual_tokens_before
    )
    assert prepared.visual_tokens_after == n // 2
