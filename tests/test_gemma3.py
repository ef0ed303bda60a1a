"""gemma3: two layer kinds, the sliding window, the ring buffer, the merge's mask, the
SigLIP substitute for [CLS] attention, and in-LLM scores with q/k norms.

The shared tests run the tiny gemma3 with a 16-token window that binds; the cases they
skip there (the ring buffer reorders keys) are checked here: to the bit with a window
that holds the whole run, and to ulps with the window binding.
"""

import mlx.core as mx
import numpy as np
import pytest
from mlx_vlm.models.cache import make_prompt_cache
from test_calibration_model import ATOL, RECIPES, expected_logits, patched_logits
from test_integration import (
    PRUNE,
    _full_masked,
    _keep_rows,
    _reduced,
    all_equal,
    run_plain,
    run_prepared,
    span_of,
)
from tiny_gemma3 import tiny_gemma3

import restore_mlx.integration as ri
from restore_mlx.adapters import gemma3 as adapter
from restore_mlx.core import calibration as cal
from restore_mlx.errors import UnsupportedMethod
from restore_mlx.state import Calibration, Prompt

TOKENS = [7, 11, 3]
WIDE = 64  # a window that holds the prompt and every decoded token
ULPS = 1e-5  # summation order only (the ring buffer's key order)


def _pruned(window):
    model, sample = tiny_gemma3(sliding_window=window)
    ref, _ = tiny_gemma3(sliding_window=window)
    ri.apply(model, **PRUNE)
    prepared = ri.prepare_tokens(model, sample)
    got = _reduced(model, prepared, TOKENS)
    rows = _keep_rows(prepared, *span_of(model, sample))
    return got, _full_masked(ref, sample, rows, TOKENS)


def test_pruning_equals_masked_full_model_to_the_bit_when_the_window_holds_the_run():
    got, want = _pruned(WIDE)
    assert all(mx.array_equal(g, w).item() for g, w in zip(got, want))


def test_pruning_with_the_window_binding_exact_prefill_then_ring_buffer_ulps():
    got, want = _pruned(16)
    assert mx.array_equal(got[0], want[0]).item()  # prefill: same keys, same order
    for g, w in zip(got[1:], want[1:]):
        assert mx.abs(g - w).max().item() < ULPS


@pytest.mark.parametrize("window, exact", [(WIDE, True), (16, False)])
def test_chunked_prefill_and_inspect_prefill_equal_one_shot(window, exact):
    model, sample = tiny_gemma3(sliding_window=window)
    ri.apply(model, "server-70")
    prepared = ri.prepare_tokens(model, sample)
    one_shot = run_prepared(model, prepared, prefill_step_size=None)
    runs = [run_prepared(model, prepared, prefill_step_size=s) for s in (3, 7)]
    first = ri.inspect_prefill(model, prepared).logits[0]
    runs.append([first - mx.logsumexp(first)])
    for run in runs:
        if exact:
            assert all_equal(run, one_shot[: len(run)])
        else:
            assert max(mx.abs(a - b).max().item() for a, b in zip(run, one_shot)) < ULPS
    # mlx-vlm alone: chunking a prompt past the window changes the last bits too.
    plain = [run_plain(tiny_gemma3(sliding_window=window)[0], sample,
                       prefill_step_size=s) for s in (None, 3)]  # fmt: skip
    assert all_equal(*plain) == exact


def _size_one_calibration(model, sample):
    """A calibration that changes nothing: every size 1, no distance bias; only the
    causal mask and each kind's window, built by restore_mlx."""
    freqs = adapter.rope_frequencies(model)
    T = sample["input_ids"].shape[1]
    zeros = mx.zeros((T,))
    windows = tuple(kind.window for kind in freqs.kinds)
    return Calibration((zeros, zeros), None, None, mx.float32, windows, freqs.of_layer)


@pytest.mark.parametrize("window", [8, 16])
def test_windowed_bias_mask_on_the_unreduced_prompt_is_mlx_vlm(window):
    # The window in restore_mlx's mask (prefill rows, decode rows through the ring
    # buffer's key order) is the one mlx-vlm applies by itself.
    model, sample = tiny_gemma3(sliding_window=window)
    ref, _ = tiny_gemma3(sliding_window=window)
    ri.apply(model, keep=1.0)
    prepared = ri.prepare_tokens(model, sample)
    tokens = TOKENS * 4  # 12 decode steps: around the ring more than once
    want = _reduced(ref, prepared, tokens)
    calibration = _size_one_calibration(model, sample)
    model._restore_state.set_prompt(Prompt(prepared.input_ids, calibration=calibration))
    got = _reduced(model, prepared, tokens)
    assert max(mx.abs(g - w).max().item() for g, w in zip(got, want)) < ULPS
    # Without the window in the mask the same run is far off.
    unwindowed = Calibration(*[getattr(calibration, f) for f in
                               ("sizes", "positions", "tables", "dtype")],
                             (None, None), calibration.of_layer)  # fmt: skip
    model._restore_state.set_prompt(Prompt(prepared.input_ids, calibration=unwindowed))
    far = _reduced(model, prepared, tokens)
    assert max(mx.abs(g - w).max().item() for g, w in zip(far, want)) > 1e-2


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_ring_buffer_wraps_and_the_decode_bias_follows_it(recipe):
    # Window 8, a 19-22 token prompt and 15 decode steps: the sliding caches wrap
    # again and again; the reference recomputes attention from the un-wrapped keys.
    model, sample = tiny_gemma3(sliding_window=8)
    ref, _ = tiny_gemma3(sliding_window=8)
    ri.apply(model, **RECIPES[recipe])
    prepared = ri.prepare_tokens(model, sample)
    tokens = TOKENS * 5
    got = patched_logits(model, prepared, tokens)
    want = expected_logits("gemma3", ref, sample, prepared, tokens)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)
    cache = make_prompt_cache(model.language_model)
    ri.inspect_prefill(model, prepared)  # the state survives a traced prefill
    run_prepared(model, prepared, steps=4, prompt_cache=cache)
    assert cache[0].offset > cache[0].max_size > cache[0]._idx  # it wrapped


def test_layer_kinds_have_their_own_base_scale_and_window():
    model, _ = tiny_gemma3()
    freqs = adapter.rope_frequencies(model)
    assert freqs.of_layer == (0, 0, 1)
    local, glob = freqs.kinds
    assert (local.window, glob.window) == (16, None)
    np.testing.assert_allclose(
        np.array(local.thetas), np.array(cal.rope_thetas(16, 1e4))
    )
    want = cal.rope_thetas(16, 1e6, scale=0.5)  # linear factor 2 on global layers only
    np.testing.assert_allclose(np.array(glob.thetas), np.array(want))


def test_the_merge_gets_a_mask_that_fits_the_prompt():
    model, sample = tiny_gemma3()
    ids, pixels = sample["input_ids"], sample["pixel_values"]
    with pytest.raises((TypeError, ValueError)):  # mlx-vlm's merge without a mask
        model.get_input_embeddings(ids, pixels)
    want = model.get_input_embeddings(ids, pixels, mask=sample["mask"]).inputs_embeds
    ri.apply(model, "mobile-50")
    got = model.get_input_embeddings(ids, pixels).inputs_embeds
    assert mx.array_equal(got, want).item()
    prepared = ri.prepare_tokens(model, sample)
    assert prepared.generate_kwargs["mask"].shape == prepared.input_ids.shape
    ri.remove(model)
    assert type(model).__name__ == "Model"


def test_reduced_features_enter_as_the_unreduced_ones_would():
    # keep 1.0 through the reduced layout: the same embeddings as mlx-vlm's own merge.
    model, sample = tiny_gemma3()
    ids = sample["input_ids"]
    want = model.get_input_embeddings(ids, sample["pixel_values"], mask=sample["mask"])
    out = adapter.encode(model, sample["pixel_values"], sample)
    (span,) = adapter.image_spans(model, ids)
    assert (span.start, span.length, out.grid) == (6, 16, (4, 4))
    request = ri.LayoutRequest(sample, out.features, mx.arange(16), (span,), True)
    lay = adapter.layout(model, request)
    kwargs = dict(lay.generate_kwargs)
    got = model.get_input_embeddings(
        lay.input_ids, kwargs.pop("pixel_values"), **kwargs
    )
    assert mx.array_equal(got.inputs_embeds, want.inputs_embeds).item()


def _naive_received(model, sample):
    """The substitute, spelled out: full softmax in the last vision block, mean over
    heads and queries, then the 2 x 2 pooling of the projector."""
    vision = model.vision_tower.vision_model
    pixels = sample["pixel_values"].transpose(0, 2, 3, 1)
    *_, states = vision(pixels, output_hidden_states=True)
    block = vision.encoder.layers[-1]
    h = np.array(block.layer_norm1(states[-2]))[0]
    attn = block.self_attn
    q = (h @ np.array(attn.q_proj.weight).T + np.array(attn.q_proj.bias)).reshape(
        64, 2, -1
    )
    k = (h @ np.array(attn.k_proj.weight).T + np.array(attn.k_proj.bias)).reshape(
        64, 2, -1
    )
    logits = np.einsum("qhd,khd->hqk", q, k) * attn.scale
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    received = probs.mean(axis=(0, 1)).reshape(4, 2, 4, 2)
    return received.mean(axis=(1, 3)).reshape(16)


@pytest.mark.parametrize("method", ["vispruner", "visionzip", "holov"])
def test_cls_substitute_serves_the_cls_methods(method):
    model, sample = tiny_gemma3()
    out = adapter.encode(model, sample["pixel_values"], sample, need_cls=method)
    want = _naive_received(model, sample)
    np.testing.assert_allclose(np.array(out.cls[0]), want, rtol=1e-4, atol=1e-7)
    ri.apply(model, method=method, keep=0.5)
    prepared = ri.prepare_tokens(model, sample)
    assert prepared.visual_tokens_after == 8
    assert mx.all(mx.isfinite(ri.inspect_prefill(model, prepared).logits)).item()


def _captured_attention(model, sample, layer_index):
    """The last query's attention weights [H, S] of mlx-vlm's own layer, captured at
    its SDPA call on the full unpatched prompt."""
    import mlx_vlm.models.gemma3.language as language

    lm = model.language_model
    emb = model.get_input_embeddings(sample["input_ids"], sample["pixel_values"],
                                     mask=sample["mask"]).inputs_embeds  # fmt: skip
    cache = make_prompt_cache(lm)
    seen, original = {}, language.scaled_dot_product_attention

    def capture(q, k, v, layer_cache, scale, mask):
        if layer_cache is cache[layer_index]:
            seen.update(q=q, k=k, scale=scale, mask=mask)
        return original(q, k, v, layer_cache, scale=scale, mask=mask)

    language.scaled_dot_product_attention = capture
    try:
        lm(sample["input_ids"], inputs_embeds=emb, cache=cache)
    finally:
        language.scaled_dot_product_attention = original
    q, k = seen["q"][:, :, -1:], mx.repeat(seen["k"], 2, axis=1)
    logits = (q * seen["scale"]) @ k.swapaxes(-1, -2)
    if isinstance(seen["mask"], mx.array):  # a sliding layer's window
        logits = mx.where(seen["mask"][..., -1:, :], logits, -mx.inf)
    return mx.softmax(logits, axis=-1)[0, :, 0]


def test_in_llm_scores_use_the_q_k_norms_and_the_query_scale():
    # FastV's score is layer 2's last-query attention to the image, mean over heads:
    # the same weights mlx-vlm's own attention computes (q/k RMSNorm, RoPE,
    # query_pre_attn_scalar). Window 64: the last query sees every image token.
    from restore_mlx.adapters.scores import llm_scores

    model, sample = tiny_gemma3(sliding_window=WIDE)
    out = adapter.encode(model, sample["pixel_values"], sample)
    ri.apply(model)
    attn, keys = llm_scores(model, adapter, sample, out.features, mx.arange(6, 22))
    want = _captured_attention(model, sample, 1).mean(axis=0)[6:22]
    np.testing.assert_allclose(np.array(attn[0]), np.array(want), rtol=1e-5, atol=1e-7)
    assert keys.shape == (1, 16, 2 * 16)


def test_in_llm_scores_keep_the_sliding_window():
    # Window 16 on a 30-token prompt: the scoring layer's last query sees tokens
    # 14..29, so image tokens 6..13 get no attention, as in mlx-vlm's own layer.
    from restore_mlx.adapters.scores import llm_scores

    model, sample = tiny_gemma3(sliding_window=16)
    out = adapter.encode(model, sample["pixel_values"], sample)
    ri.apply(model)
    attn, _ = llm_scores(model, adapter, sample, out.features, mx.arange(6, 22))
    probs = _captured_attention(model, sample, 1).mean(axis=0)  # the last S keys
    want = mx.concatenate([mx.zeros((30 - probs.shape[-1],)), probs])[6:22]
    np.testing.assert_allclose(np.array(attn[0]), np.array(want), rtol=1e-5, atol=1e-7)
    assert np.all(np.array(attn[0, :8]) == 0) and np.all(np.array(attn[0, 8:]) > 0)


def test_trace_share_is_the_attention_mlx_vlm_computes():
    # inspect_prefill's visual share (unreduced, window binding) per layer equals the
    # last query's share on the image under mlx-vlm's own attention and window.
    model, sample = tiny_gemma3()
    ref, _ = tiny_gemma3()
    ri.apply(model, keep=1.0)
    share = ri.inspect_prefill(model, ri.prepare_tokens(model, sample)).visual_attention
    per_layer = []
    for i in range(3):
        probs = _captured_attention(ref, sample, i)  # [H, S], S = the keys it saw
        S = probs.shape[-1]
        visual = mx.zeros((30,), dtype=mx.bool_)
        visual[6:22] = True
        per_layer.append(mx.sum(probs * visual[30 - S :], axis=-1).mean())
    want = mx.stack(per_layer).mean()
    assert abs(share.item() - want.item()) < 1e-5
    assert 0.0 < share.item() < 1.0
