"""Timing and memory helpers of the benchmarks: one mlx-vlm generation timed, the KV
bytes it holds, a clean start for each measured row."""

import time

import mlx.core as mx
from mlx_vlm.generate.ar import generate_step
from mlx_vlm.models.cache import make_prompt_cache


def timed_generate(model, ids, pixels, kwargs, max_tokens, step):
    """Plain ``mlx_vlm`` ``generate_step``: (time to first token, decode tok/s, cache)."""
    cache = make_prompt_cache(model.language_model)
    kwargs = dict(kwargs)
    mask = kwargs.pop("mask", None)  # the attention mask generate_step takes
    stamps, t0 = [], time.perf_counter()
    for _ in generate_step(
        ids, model, pixels, mask, max_tokens=max_tokens, temperature=0.0,
        prompt_cache=cache, prefill_step_size=step, **kwargs,
    ):  # fmt: skip
        stamps.append(time.perf_counter())
    tps = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else 0.0
    return stamps[0] - t0, tps, cache


def kv_bytes(cache, tokens: int) -> int:
    """Bytes the KV cache holds for ``tokens`` positions (its buffers grow in steps)."""
    total = 0
    for c in cache:
        if getattr(c, "keys", None) is not None:
            total += (c.keys.nbytes + c.values.nbytes) // c.keys.shape[2] * tokens
    return total


def fresh_row() -> float:
    """Start a row: empty MLX's buffer cache, reset the peak; GB resident before it
    (the weights and the request), so the peak above it is what the row adds."""
    mx.clear_cache()
    mx.reset_peak_memory()
    return mx.get_active_memory() / 1e9


def prefill_chunks(length: int, step) -> list:
    """(start, end) of every prefill forward ``generate_step`` runs on a prompt of
    ``length`` tokens: chunks of ``step`` up to the last token, which runs alone."""
    if not step or length <= 1:
        return [(0, length)]
    starts = list(range(0, length - 1, step))
    return [(a, min(a + step, length - 1)) for a in starts] + [(length - 1, length)]


def bias_bytes(prompt, step) -> int:
    """Bytes of the calibration bias a prefill holds at once: the mask rows of the
    chunk with the most (queries x keys so far), built as the attention builds them
    (``Calibration.prefill``); 0 without calibration. Never a [P, P] buffer while
    ``step`` is below the prompt length."""
    calibration = getattr(prompt, "calibration", None)
    if calibration is None:
        return 0
    a, b = max(prefill_chunks(prompt.length, step), key=lambda c: (c[1] - c[0]) * c[1])
    masks = [m for kind in calibration.prefill(a, b) for m in kind]  # per layer kind
    mx.eval(masks)
    distinct = {id(m): m for m in masks}.values()  # layer 0 may share later layers'
    return sum(m.nbytes for m in distinct)
