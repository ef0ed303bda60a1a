"""What is particular to the Qwen families: the [CLS] substitute of their towers,
deepstack levels reduced with the features' groups, hybrid layers left unpatched."""

import mlx.core as mx
import numpy as np
import pytest
from conftest import BUILDERS

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for
from restore_mlx.core.api import REDUCERS, reduce, reduce_alongside

QWEN = sorted(a for a in BUILDERS if a.startswith("qwen"))


@pytest.mark.parametrize("arch", QWEN)
def test_tower_attention_substitute_is_a_distribution_over_tokens(arch):
    model, sample = BUILDERS[arch]()
    out = adapter_for(model).encode(model, sample["pixel_values"], sample, "vispruner")
    n = out.features.shape[1]
    assert out.cls.shape == (1, n)
    assert mx.all(out.cls >= 0).item()
    assert abs(out.cls.sum().item() - 1.0) < 1e-5
    assert out.cls.max().item() > out.cls.min().item()  # it tells tokens apart
    assert adapter_for(model).encode(model, sample["pixel_values"], sample).cls is None


@pytest.mark.parametrize("arch", ["qwen2_5_vl", "qwen3_vl"])
def test_tower_attention_substitute_is_uniform_without_queries(arch):
    # Zero queries in the last block: every query spreads evenly over its segment, so
    # each patch receives 1/S and each merged token 1/N, wherever the windows are.
    model, sample = BUILDERS[arch]()
    qkv = model.vision_tower.blocks[-1].attn.qkv
    width = qkv.weight.shape[1]
    qkv.weight[:width] = 0.0
    qkv.bias[:width] = 0.0
    out = adapter_for(model).encode(model, sample["pixel_values"], sample, "holov")
    n = out.features.shape[1]
    np.testing.assert_allclose(np.array(out.cls), 1.0 / n, rtol=1e-5)


@pytest.mark.parametrize("arch", QWEN)
def test_every_reducer_runs_on_qwen_towers(arch):
    model, sample = BUILDERS[arch]()
    for method in REDUCERS:
        ri.apply(model, method=method, keep=0.25)
        prepared = ri.prepare_tokens(model, sample)
        n = prepared.visual_tokens_before
        assert prepared.visual_tokens_after == round(0.25 * n), method
        logits = ri.inspect_prefill(model, prepared).logits
        assert mx.all(mx.isfinite(logits)).item(), method


@pytest.mark.parametrize(
    "recipe",
    [
        dict(method="divprune", restore=False),  # kept rows as they are
        dict(method="divprune"),  # RESTORE: kept rows + anchor groups
        dict(method="tome"),  # groups only
    ],
    ids=["prune", "restore", "merge"],
)
def test_other_levels_are_reduced_like_the_features(recipe):
    # Reducing the features themselves alongside gives back the reduced features.
    x = mx.random.normal((1, 24, 8), key=mx.random.key(3))
    red = reduce(x, keep=0.25, **recipe)
    method, flags = recipe["method"], {k: v for k, v in recipe.items() if k != "method"}
    again = reduce_alongside(red, x, method, **flags)
    np.testing.assert_allclose(np.array(again), np.array(red.features), atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        reduce_alongside(red, x[:, :5], method, **flags)


def test_deepstack_levels_reach_the_language_model():
    model, sample = BUILDERS["qwen3_vl"]()
    ri.apply(model, method="divprune", keep=0.25)
    prepared = ri.prepare_tokens(model, sample)
    levels = prepared.generate_kwargs["deepstack_visual_embeds"]
    assert [lv.shape for lv in levels] == [(4, 64), (4, 64)]
    # Without them the model answers differently: they are not a no-op.
    with_levels = ri.inspect_prefill(model, prepared).logits
    del prepared.generate_kwargs["deepstack_visual_embeds"]
    without = ri.inspect_prefill(model, prepared).logits
    assert not mx.allclose(with_levels, without).item()


def _layer_attention(model, sample, layer_index):
    """The last query's attention [T] (mean over heads) in mlx-vlm's own layer
    ``layer_index`` on the full unpatched prompt, deepstack levels included."""
    import mlx_vlm.models.qwen3_vl.language as language
    from mlx_vlm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model.language_model)
    seen, original = {}, language.scaled_dot_product_attention

    def capture(q, k, v, layer_cache, scale, mask):
        if layer_cache is cache[layer_index]:
            seen.update(q=q, k=k, scale=scale)
        return original(q, k, v, layer_cache, scale=scale, mask=mask)

    extras = {k: v for k, v in sample.items() if k not in ("input_ids", "pixel_values")}
    language.scaled_dot_product_attention = capture
    try:
        model(sample["input_ids"], sample["pixel_values"], cache=cache, **extras)
    finally:
        language.scaled_dot_product_attention = original
    k = mx.repeat(seen["k"], seen["q"].shape[1] // seen["k"].shape[1], axis=1)
    logits = (seen["q"][:, :, -1:] * seen["scale"]) @ k.swapaxes(-1, -2)
    return mx.softmax(logits, axis=-1)[0, :, 0].mean(axis=0)


def test_in_llm_scores_see_the_deepstack_level_the_lm_adds():
    # FastV reads layer 2's attention; Qwen3-VL adds deepstack level 0 to the image
    # tokens after layer 1, so the pre-pass must add it too to match mlx-vlm's model.
    from restore_mlx.adapters.contract import visual_slots
    from restore_mlx.adapters.scores import llm_scores

    model, sample = BUILDERS["qwen3_vl"]()
    adapter = adapter_for(model)
    out = adapter.encode(model, sample["pixel_values"], sample)
    slots = visual_slots(adapter.image_spans(model, sample["input_ids"]))
    want = _layer_attention(model, sample, 1)[slots]
    attn, _ = llm_scores(model, adapter, sample, out.features, slots, out.extra)
    np.testing.assert_allclose(np.array(attn[0]), np.array(want), rtol=1e-4, atol=1e-6)
    without, _ = llm_scores(model, adapter, sample, out.features, slots)
    assert not np.allclose(np.array(without[0]), np.array(want), rtol=1e-3)


def test_hybrid_patches_only_softmax_attention():
    model, _ = BUILDERS["qwen3_5"]()
    layers = model.language_model.model.layers
    before = [type(getattr(layer, "linear_attn", None)) for layer in layers]
    ri.apply(model)
    patched = [i for i, layer in enumerate(layers) if hasattr(layer, "self_attn")
               and hasattr(type(layer.self_attn), "_restore_base")]  # fmt: skip
    assert patched == [1, 3]
    assert [layer.self_attn._restore_layer for layer in layers[1::2]] == [0, 1]
    assert [type(getattr(layer, "linear_attn", None)) for layer in layers] == before
