"""RESTORE inside mlx-vlm: exactness against unpatched mlx-vlm, positions, cache, chunks."""

import sys
from contextlib import contextmanager

import mlx.core as mx
import pytest
from conftest import BUILDERS
from mlx_vlm.generate import generate_step
from mlx_vlm.models.cache import KVCache, make_prompt_cache
from reference import REFERENCE
from tiny_gemma3 import RING_BUFFER

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for
from restore_mlx.adapters.contract import visual_slots
from restore_mlx.adapters.patching import cache_offset, has_attention, text_model

STEPS = 4
PRUNE = dict(
    method="divprune", keep=0.5, anchors=False, size_bias=False, distance_bias=False
)


def extras(sample):
    return {k: v for k, v in sample.items() if k not in ("input_ids", "pixel_values")}


def run_generate(model, ids, pixels, kwargs, steps=STEPS, **options):
    """Greedy decode with mlx-vlm's own generate_step; the logprobs of every step."""
    out = []
    kwargs = dict(kwargs)
    mask = kwargs.pop("mask", None)  # the attention mask generate_step takes
    gen = generate_step(ids, model, pixels, mask, max_tokens=steps, temperature=0.0,
                        **options, **kwargs)  # fmt: skip
    for _, logprobs in gen:
        out.append(logprobs)
    mx.eval(out)
    return out


def run_prepared(model, prepared, **options):
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    return run_generate(model, prepared.input_ids, pixels, kwargs, **options)


def run_plain(model, sample, **options):
    return run_generate(model, sample["input_ids"], sample["pixel_values"], extras(sample),
                        **options)  # fmt: skip


def span_of(model, sample):
    """(spans, N, T): the image runs, how many image tokens, and the prompt length."""
    spans = adapter_for(model).image_spans(model, sample["input_ids"])
    return spans, sum(s.length for s in spans), sample["input_ids"].shape[1]


def fixed_tokens(prepared):
    """Visual tokens no reduction touches (e.g. llava_onevision's row newlines)."""
    return sum(s.length for s in prepared.segments if not s.reducible)


def all_equal(a, b):
    return len(a) == len(b) and all(mx.array_equal(x, y).item() for x, y in zip(a, b))


# Stock mlx-vlm's linear attention (Qwen3.5's GatedDeltaNet) rounds differently when
# the same prompt is cut into other chunks (up to 5e-7 on the tiny models, unpatched),
# so on hybrid models chunking invariance holds to this tolerance, not to the bit.
HYBRID_ATOL = 1e-5


def same_up_to_chunking(model, a, b):
    """Bit-identical, or on a hybrid model equal to ``HYBRID_ATOL``."""
    if not _hybrid(model):
        return all_equal(a, b)
    close = [mx.allclose(x, y, rtol=0, atol=HYBRID_ATOL).item() for x, y in zip(a, b)]
    return len(a) == len(b) and all(close)


def test_reduction_off_is_bit_identical(arch):
    ref_model, sample = BUILDERS[arch]()
    expected = run_plain(ref_model, sample)
    model, _ = BUILDERS[arch]()
    ri.apply(model, keep=1.0, restore=False)
    prepared = ri.prepare_tokens(model, sample)
    assert prepared.reduction is None
    _, n, T = span_of(model, sample)
    assert prepared.visual_tokens_before == prepared.visual_tokens_after == n
    assert all_equal(run_prepared(model, prepared), expected)
    # Raw logits too, at every prompt position and decode step.
    tokens = [7, 11, 3]
    plain = _reduced(
        ref_model,
        ri.PreparedPrompt(
            sample["input_ids"],
            {k: v for k, v in sample.items() if k != "input_ids"},
            None,
            n,
            n,
            T,
        ),
        tokens,
    )
    assert all_equal(_reduced(model, prepared, tokens), plain)
    # A prompt that was not prepared runs as mlx-vlm runs it, even after a reduced one.
    ri.apply(model, "mobile-50")
    assert ri.prepare_tokens(model, sample).reduction is not None
    assert all_equal(run_plain(model, sample), expected)


def _attention_classes(model):
    """The class of every layer's softmax attention (None for linear attention)."""
    layers = model.language_model.model.layers
    return [type(getattr(layer, "self_attn", None)) for layer in layers]


def test_remove_restores_the_unpatched_model(arch):
    ref_model, sample = BUILDERS[arch]()
    expected = run_plain(ref_model, sample)
    model, _ = BUILDERS[arch]()
    layers = adapter_for(model).layers(model)
    classes = [type(layer.get("self_attn")) for layer in layers]
    ri.apply(model, "server-70")
    run_prepared(model, ri.prepare_tokens(model, sample))
    ri.remove(model)
    assert [type(layer.get("self_attn")) for layer in layers] == classes
    assert not hasattr(model, "_restore_state")
    assert all_equal(run_plain(model, sample), expected)


class _OwnMask:
    """A decoder layer that takes its own mask instead of the one its model passes
    (sliding layers need their window; mlx-vlm's models pass one mask to all)."""

    def __init__(self, layer):
        self.layer, self.mask = layer, None

    def __call__(self, x, mask=None, cache=None, *args, **kwargs):
        return self.layer(x, self.mask, cache, *args, **kwargs)


def _window_masks(model, allowed, mask, num_queries):
    """Per layer: ``mask`` [Lq, S] limited to the layer's sliding window, counted over
    the keys that remain (``allowed``), as the reduced prompt's cache counts them."""
    layers = model.language_model.model.layers
    spec = REFERENCE[model.config.model_type]
    rank = mx.cumsum(allowed.astype(mx.int32)) - 1
    gap = rank[-num_queries:, None] - rank[None, :]
    masks = []
    for i in range(len(layers)):
        window = spec.window(model, i)
        masks.append(mask if window is None else mask & (gap < window))
    return masks


@contextmanager
def _given_mask(inner, mask):
    """Make the text model ``inner`` use ``mask``: some language models
    (llava_onevision, InternVL) drop a caller's mask and build their own with
    ``create_attention_mask``."""
    module = sys.modules[type(inner).__module__]
    build = getattr(module, "create_attention_mask", None)
    if build is not None:
        module.create_attention_mask = lambda *args, **kwargs: mask
    try:
        yield
    finally:
        if build is not None:
            module.create_attention_mask = build


def _full_masked(model, sample, keep_rows, tokens):
    """Unpatched full prompt with the removed visual keys masked out, then decode.
    Sliding windows count the keys that remain (one plain cache per layer, each layer
    masked with its own window)."""
    ids, lm = sample["input_ids"], model.language_model
    T = ids.shape[1]
    emb = model.get_input_embeddings(ids, sample["pixel_values"], **extras(sample))
    allowed = mx.zeros((T,), dtype=mx.bool_)
    allowed[keep_rows] = True
    causal = mx.tril(mx.ones((T, T), dtype=mx.bool_))
    qwen = emb.position_ids is not None
    spec = REFERENCE[model.config.model_type]
    inner = text_model(model)
    windowed = any(spec.window(model, i) for i in range(len(inner.layers)))
    cache = make_prompt_cache(lm)
    embed = inner.embed_tokens
    if windowed:
        cache = [KVCache() for _ in inner.layers]
        layers, shims = inner.layers, [_OwnMask(x) for x in inner.layers]
    # Qwen3-VL adds its deepstack levels to the image positions of the prompt.
    names = ("visual_pos_masks", "deepstack_visual_embeds")
    deepstack = {k: getattr(emb, k, None) for k in names}
    deepstack = {k: v for k, v in deepstack.items() if v is not None}

    def forward(x, mask, step):
        if windowed:
            for shim, own in zip(
                shims, _window_masks(model, allowed, mask, x.shape[1])
            ):
                shim.mask = own
            inner.layers = shims
        try:
            if not qwen:
                with _given_mask(inner, mask):
                    return lm(None, inputs_embeds=x, mask=mask, cache=cache).logits
        finally:
            if windowed:
                inner.layers = layers
        pos = (
            emb.position_ids
            if step is None
            else mx.full((3, 1, 1), step) + emb.position_ids.max() + 1
        )
        more = deepstack if step is None else {}
        h = lm.model(
            None, inputs_embeds=x, mask=mask, cache=cache, position_ids=pos, **more
        )
        return lm.lm_head(h) if "lm_head" in lm else embed.as_linear(h)

    logits = [forward(emb.inputs_embeds, causal & allowed, None)[:, keep_rows]]
    for i, tok in enumerate(tokens):
        allowed = mx.concatenate([allowed, mx.array([True])])
        x = embed(mx.array([[tok]]))
        logits.append(forward(x, allowed[None], i))
    return logits


def _embed(model, prepared):
    """The prompt's embeddings and what the LM takes with them, as generate_step
    hands them over: the caller's kwargs, then the embedding helper's outputs, then
    explicit positions winning (Qwen3-VL's deepstack levels are caller kwargs)."""
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values")
    emb = model.get_input_embeddings(prepared.input_ids, pixels, **kwargs)
    kwargs.pop("mask", None)  # generate_step's own argument: the embedding step's only
    made = {k: v for k, v in emb.to_dict().items() if k != "inputs_embeds"}
    explicit = {k: kwargs[k] for k in ("position_ids", "rope_deltas") if k in kwargs}
    extra = {**kwargs, **{k: v for k, v in made.items() if v is not None}, **explicit}
    return emb.inputs_embeds, extra


def _reduced(model, prepared, tokens):
    lm = model.language_model
    emb, extra = _embed(model, prepared)
    cache = make_prompt_cache(lm)
    logits = [lm(prepared.input_ids, inputs_embeds=emb, cache=cache, **extra).logits]
    assert cache_offset(cache) == prepared.prompt_tokens
    for tok in tokens:
        logits.append(lm(mx.array([[tok]]), cache=cache).logits)
    return logits


def _keep_rows(prepared, spans, n, T):
    slots = visual_slots(spans)
    kept = set(slots[prepared.reduction.positions[0]].tolist())
    removed = set(slots.tolist()) - kept
    return mx.array([i for i in range(T) if i not in removed])


def _hybrid(model):
    """Whether some LM layers are linear attention (Qwen3.5's GatedDeltaNet): the
    calibration reference then runs on the reduced prompt itself."""
    return REFERENCE[model.config.model_type].reduced


def test_pruning_at_original_positions_equals_masked_full_model(arch):
    if arch in RING_BUFFER:
        pytest.skip(RING_BUFFER[arch])
    model, sample = BUILDERS[arch]()
    if _hybrid(model):
        pytest.skip(
            "linear-attention layers consume every token they are given, masked slots "
            "included, so no masked full prompt equals the reduced one; "
            "test_hybrid_pruning_equals_unpatched_reduced_prompt tests what holds"
        )
    ref_model, _ = BUILDERS[arch]()
    if not all(map(has_attention, adapter_for(model).layers(model))):
        pytest.skip(
            "hybrid model: its convolution layers consume every token of the "
            "unreduced prompt, so masking keys cannot reproduce pruning; "
            "test_tiled.py checks the invariant that holds (patched pruning == "
            "unpatched layers fed the reduced prompt at the same positions)"
        )
    ri.apply(model, **PRUNE)
    prepared = ri.prepare_tokens(model, sample)
    assert not mx.any(prepared.reduction.merged).item()
    tokens = [7, 11, 3]
    got = _reduced(model, prepared, tokens)
    want = _full_masked(
        ref_model, sample, _keep_rows(prepared, *span_of(model, sample)), tokens
    )
    for g, w in zip(got, want):
        assert mx.array_equal(g, w).item()
    # Re-indexed positions (the base as usually deployed) do not equal it.
    ri.apply(model, **{**PRUNE, "positions": False})
    reindexed = _reduced(model, ri.prepare_tokens(model, sample), tokens)
    assert not mx.array_equal(reindexed[0], want[0]).item()
    assert not mx.array_equal(reindexed[1], want[1]).item()


def test_hybrid_pruning_equals_unpatched_reduced_prompt(arch):
    # What holds on a hybrid model: the patched prefill and decode of the pruned prompt
    # equal unpatched mlx-vlm fed the same reduced prompt with the unreduced prompt's
    # positions of the kept tokens given explicitly, decode continuing past them.
    model, sample = BUILDERS[arch]()
    if not _hybrid(model):
        pytest.skip(
            "no linear-attention layers: the masked full model is the stronger test "
            "(convolution hybrids have their own in test_tiled.py)"
        )
    ref_model, _ = BUILDERS[arch]()
    ri.apply(model, **PRUNE)
    prepared = ri.prepare_tokens(model, sample)
    tokens = [7, 11, 3]
    got = _reduced(model, prepared, tokens)
    full = adapter_for(ref_model).full_positions(ref_model, sample["input_ids"], sample)
    cols = _keep_rows(prepared, *span_of(model, sample))
    lm, top = ref_model.language_model, int(full.max().item())
    emb, _ = _embed(ref_model, prepared)
    cache = make_prompt_cache(lm)
    out = lm(prepared.input_ids, inputs_embeds=emb, cache=cache,
             position_ids=full[:, cols][:, None, :])  # fmt: skip
    want = [out.logits]
    for i, tok in enumerate(tokens):
        step = mx.full((3, 1, 1), top + 1 + i, dtype=mx.int32)
        want.append(lm(mx.array([[tok]]), cache=cache, position_ids=step).logits)
    assert all_equal(got, want)
    # Re-indexed positions (the base as usually deployed) do not equal it.
    ri.apply(model, **{**PRUNE, "positions": False})
    reindexed = _reduced(model, ri.prepare_tokens(model, sample), tokens)
    assert not mx.array_equal(reindexed[0], want[0]).item()
    assert not mx.array_equal(reindexed[1], want[1]).item()


def test_cache_holds_text_and_kept_tokens(arch):
    model, sample = BUILDERS[arch]()
    ri.apply(model, method="divprune", tokens=6)
    prepared = ri.prepare_tokens(model, sample)
    fixed = fixed_tokens(prepared)  # kept as they are, outside the budget
    assert prepared.visual_tokens_after == 6 + fixed
    _, n, T = span_of(model, sample)
    assert prepared.prompt_tokens == T - n + 6 + fixed == prepared.input_ids.shape[1]
    cache = make_prompt_cache(model.language_model)
    run_prepared(model, prepared, steps=1, prompt_cache=cache)
    # generate_step has run the prompt and two decode steps when it yields the first.
    attention = [c for c in cache if hasattr(c, "offset")]  # not linear-attention state
    assert attention and all(c.offset == prepared.prompt_tokens + 1 for c in attention)
    for c in attention:
        # A sliding-window layer's ring buffer holds the last max_size of them.
        held = min(c.offset, getattr(c, "max_size", None) or c.offset)
        assert c.state[0].shape[2] >= held


def test_chunked_prefill_with_bias_equals_one_shot(arch):
    if arch in RING_BUFFER:
        pytest.skip(RING_BUFFER[arch])
    model, sample = BUILDERS[arch]()
    ri.apply(model, "server-70")
    prepared = ri.prepare_tokens(model, sample)
    calibration = prepared.prompt.calibration
    assert calibration.sizes is not None and calibration.positions is not None
    one_shot = run_prepared(model, prepared, prefill_step_size=None)
    for step in (3, 7):
        chunked = run_prepared(model, prepared, prefill_step_size=step)
        assert same_up_to_chunking(model, chunked, one_shot)
    if _hybrid(model):  # the tolerance is far below what the bias changes
        ri.apply(model, "server-70", size_bias=False, distance_bias=False)
        plain = run_prepared(model, ri.prepare_tokens(model, sample))
        assert mx.abs(plain[0] - one_shot[0]).max().item() > 100 * HYBRID_ATOL


def test_bias_changes_the_output(arch):
    model, sample = BUILDERS[arch]()
    ri.apply(model, "server-70")
    calibrated = run_prepared(model, ri.prepare_tokens(model, sample))
    ri.apply(model, "server-70", size_bias=False, distance_bias=False)
    plain = run_prepared(model, ri.prepare_tokens(model, sample))
    assert not mx.array_equal(calibrated[0], plain[0]).item()


def test_inspect_prefill_matches_generate(arch):
    if arch in RING_BUFFER:
        pytest.skip(RING_BUFFER[arch])
    model, sample = BUILDERS[arch]()
    for preset in ("server-70", None):  # full RESTORE: the calibrated trace
        ri.apply(model, preset, **({} if preset else dict(keep=1.0, restore=False)))
        prepared = ri.prepare_tokens(model, sample)
        trace = ri.inspect_prefill(model, prepared)
        first = run_prepared(model, prepared, steps=1)[0]
        logits = trace.logits[0]
        # One-shot prefill against generate's chunks (all but the last token, then it).
        assert same_up_to_chunking(model, [logits - mx.logsumexp(logits)], [first])
        assert trace.hidden.shape == (1, 64)
        share = trace.visual_attention.item()
        assert 0.0 < share < 1.0


def test_text_only_prompt_is_unreduced(arch):
    model, sample = BUILDERS[arch]()
    ri.apply(model)
    ids = mx.array([[5, 6, 7, 8, 9]])
    prepared = ri.prepare_tokens(model, {"input_ids": ids})
    assert prepared.reduction is None and prepared.visual_tokens_after == 0
    assert ri.inspect_prefill(model, prepared).visual_attention.item() == 0.0


@pytest.mark.parametrize("method", ["fastv", "dart", "pool", "tome"])
def test_in_llm_and_grid_methods_run(arch, method):
    model, sample = BUILDERS[arch]()
    ri.apply(model, method=method, keep=0.25)
    prepared = ri.prepare_tokens(model, sample)
    fixed = fixed_tokens(prepared)
    n = prepared.visual_tokens_before - fixed
    assert prepared.visual_tokens_after == max(1, round(0.25 * n)) + fixed
    assert mx.all(mx.isfinite(ri.inspect_prefill(model, prepared).logits)).item()


def test_errors():
    model, sample = BUILDERS["llava"]()

    class Other:
        class config:
            model_type = "no_such_vlm"

    with pytest.raises(
        ValueError, match="not supported by restore_mlx; supported: llava"
    ):
        ri.apply(Other())
    with pytest.raises(ValueError, match="keep"):
        ri.apply(model, keep=0.0)
    with pytest.raises(ValueError, match="unknown method"):
        ri.apply(model, method="nope")
    with pytest.raises(ValueError, match="not patched"):
        ri.prepare_tokens(BUILDERS["llava"]()[0], sample)
    ri.apply(model, tokens=100)
    with pytest.raises(ValueError, match="tokens"):
        ri.prepare_tokens(model, sample)
    ri.apply(model, method="vispruner", keep=0.5)
    assert ri.prepare_tokens(model, sample).visual_tokens_after == 8


def test_reused_prefix_continues_with_the_prompt_state(arch):
    # As with mlx-vlm's prompt-cache reuse: a new request whose first forward starts
    # after a cached prefix still gets its positions and bias.
    model, sample = BUILDERS[arch]()
    ri.apply(model, "server-70")
    prepared = ri.prepare_tokens(model, sample)
    lm, ids = model.language_model, prepared.input_ids
    emb, extra = _embed(model, prepared)
    # A copy: gemma3's forward scales the embeddings it is given in place.
    full = lm(ids, inputs_embeds=mx.array(emb), cache=make_prompt_cache(lm), **extra)
    full = full.logits
    cache, k = make_prompt_cache(lm), prepared.prompt_tokens - 3
    lm(ids[:, :k], inputs_embeds=emb[:, :k], cache=cache, **extra)
    model._restore_state.set_prompt(prepared.prompt)
    tail = lm(ids[:, k:], inputs_embeds=emb[:, k:], cache=cache, **extra).logits
    assert same_up_to_chunking(model, [tail], [full[:, k:]])
