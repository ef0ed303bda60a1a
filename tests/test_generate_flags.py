"""mlx-vlm generation options that meet RESTORE's biases: a quantized KV cache, a
rotating one (``max_kv_size``), chunked prefill. Run through mlx-vlm's own
``generate_step`` on a tiny llava whose heads are wide enough to quantize."""

from dataclasses import replace

import mlx.core as mx
import pytest
from conftest import tiny_llava
from mlx_vlm.generate import generate_step
from mlx_vlm.models.cache import QuantizedKVCache, make_prompt_cache

import restore_mlx.integration as ri
from restore_mlx.errors import KVCacheTooSmall
from restore_mlx.generation import check_cache_fits
from restore_mlx.state import Calibration

STEPS = 6


def wide_head_llava(seed=0):
    """conftest's tiny llava with 2 heads of 32 (its 4 heads of 16 are narrower than
    the smallest group MLX quantizes, 32)."""
    return tiny_llava(seed, heads=2, kv_heads=1)


def decode(model, prepared, **options):
    """Greedy tokens and per-step logprobs of mlx-vlm's generate_step."""
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    steps = generate_step(prepared.input_ids, model, pixels, None, max_tokens=STEPS,
                          temperature=0.0, **options, **kwargs)  # fmt: skip
    tokens, logprobs = [], []
    for token, lp in steps:
        tokens.append(int(token))
        logprobs.append(lp)
    mx.eval(logprobs)
    return tokens, logprobs


def gap(a, b, steps) -> float:
    return max(float(mx.abs(x - y).max()) for x, y in zip(a[:steps], b[:steps]))


def steps_to_compare(tokens_a, tokens_b) -> int:
    """Steps whose logprobs both runs computed from the same tokens: up to and with
    the first step where the greedy choices part."""
    for i, (a, b) in enumerate(zip(tokens_a, tokens_b)):
        if a != b:
            return i + 1
    return len(tokens_a)


@pytest.fixture(scope="module")
def prepared():
    """(model, calibrated prompt, same prompt without calibration) at server-70."""
    model, sample = wide_head_llava()
    ri.apply(model, "server-70", size_bias=False, distance_bias=False)
    plain = ri.prepare_tokens(model, sample)
    ri.apply(model, "server-70")
    calibrated = ri.prepare_tokens(model, sample)
    assert calibrated.prompt.calibration.sizes is not None  # decode carries a size bias
    return model, calibrated, plain


# Uniform 4 and 8 bits, and TurboQuant (mlx-vlm's choice for fractional bits), with
# how far quantizing the cache may move the logprobs (seen: 0.0025, 0.0001, 0.0024).
QUANTIZED = [
    pytest.param(dict(kv_bits=4, kv_group_size=32), 5e-3, id="uniform-4"),
    pytest.param(dict(kv_bits=8, kv_group_size=32), 5e-4, id="uniform-8"),
    pytest.param(dict(kv_bits=3.5), 5e-3, id="turboquant-3.5"),
]


class PrefillOnly(Calibration):
    """The same prefill biases, no decode bias."""

    def decode_vectors(self, length, capacity):
        return (mx.zeros((capacity,), dtype=self.dtype),) * 2


def run_with(model, prompt, prepared, **options):
    """decode() with the model armed for ``prompt`` (several share one model)."""
    model._restore_state.set_prompt(prompt)
    return decode(model, prepared, **options)


@pytest.mark.parametrize("options, tolerance", QUANTIZED)
def test_quantized_kv_cache_keeps_the_bias(prepared, options, tolerance):
    model, calibrated, plain = prepared
    options = dict(options, quantized_kv_start=0)  # quantize from the first decode
    tokens, exact = run_with(model, calibrated.prompt, calibrated)
    cache = make_prompt_cache(model.language_model)
    q_tokens, quantized = run_with(
        model, calibrated.prompt, calibrated, prompt_cache=cache, **options
    )
    if options["kv_bits"] in (4, 8):
        assert all(isinstance(c, QuantizedKVCache) for c in cache)
    # Within quantization tolerance of the unquantized reduced run.
    assert gap(exact, quantized, steps_to_compare(tokens, q_tokens)) < tolerance

    # The decode steps, which read the quantized cache, still add the size bias:
    # the same quantized run without it moves by more than quantization does.
    no_decode_bias = replace(
        calibrated.prompt,
        calibration=PrefillOnly(**vars(calibrated.prompt.calibration)),
    )
    n_tokens, unbiased = run_with(model, no_decode_bias, calibrated, **options)
    decode_steps = slice(1, steps_to_compare(q_tokens, n_tokens))
    assert gap(quantized[decode_steps], unbiased[decode_steps], STEPS) > 2 * tolerance

    # And the same quantized run without calibration at all differs too.
    _, uncalibrated = run_with(model, plain.prompt, plain, **options)
    assert gap(quantized, uncalibrated, STEPS) > 2 * tolerance


def test_rotating_cache_that_holds_everything_is_exact(prepared):
    model, calibrated, _ = prepared
    tokens, exact = run_with(model, calibrated.prompt, calibrated)
    size = calibrated.prompt_tokens + STEPS
    r_tokens, rotating = run_with(
        model, calibrated.prompt, calibrated, max_kv_size=size
    )
    assert r_tokens == tokens
    assert all(mx.array_equal(a, b).item() for a, b in zip(exact, rotating))


def test_chunked_prefill_is_exact(prepared):
    # tests/test_integration.py checks every architecture; this is the wide-head
    # model the cache tests above use, chunked mid-image.
    model, calibrated, _ = prepared
    _, one_shot = run_with(model, calibrated.prompt, calibrated, prefill_step_size=None)
    _, chunked = run_with(model, calibrated.prompt, calibrated, prefill_step_size=5)
    assert all(mx.array_equal(a, b).item() for a, b in zip(one_shot, chunked))


def test_a_cache_that_would_wrap_is_refused_with_the_fix():
    check_cache_fits(20, {"max_kv_size": 28, "max_tokens": 8})  # exactly fits
    check_cache_fits(20, {"max_tokens": 10_000})  # no rotating cache at all
    with pytest.raises(KVCacheTooSmall) as info:
        check_cache_fits(20, {"max_kv_size": 27, "max_tokens": 8})
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "would wrap" in message and "at least 28" in message
    assert "\n" not in message
