"""Where the RESTORE path spends its time, stage by stage, with ``mx.eval`` between.

For one model, method and kept fraction: the vision tower; the base reducer alone vs
with anchor merging (the difference is what anchors cost); positions and bias build;
the LM prefill of the reduced prompt without and with the RESTORE plan; one decode
step without and with the decode bias; and, per attention layer on the real shapes,
SDPA with the additive mask vs mlx-vlm's causal mask and RoPE at per-token positions
vs the plain offset. Medians over ``repeats``.
"""

import statistics
import time

import mlx.core as mx

from ..adapters import adapter_for
from ..adapters.patching import attention_layers, rope_at
from ..core.api import reduce
from ..integration import apply, prepare_tokens, remove
from .timing import timed_generate


def _median_time(fn, repeats):
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mx.eval(fn())
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _prefill(model, prep):
    """mlx-vlm's generate_step on the prepared prompt: (time to first token, one
    decode step). The patch plan applies when the model is armed for ``prep``."""
    kwargs = dict(prep.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    first, tps, _ = timed_generate(model, prep.input_ids, pixels, kwargs, 4, 2048)
    return first, 1.0 / tps


def _layer_ops(model, prep, repeats):
    """One attention layer's SDPA (additive mask vs causal) and RoPE (per-token vs
    offset) on the reduced prompt's shapes, in the model dtype."""
    attn = attention_layers(adapter_for(model).layers(model))[0].self_attn
    L = prep.input_ids.shape[1]
    hd = attn.q_proj.weight.shape[0] // attn.n_heads
    dtype = attn.q_proj.weight.dtype
    q = mx.random.normal((1, attn.n_heads, L, hd)).astype(dtype)
    k = mx.random.normal((1, attn.n_kv_heads, L, hd)).astype(dtype)
    out = {}
    calibration = getattr(prep.prompt, "calibration", None)
    if calibration is not None:
        masks = calibration.prefill(0, L)[0]  # the first layer kind
        sdpa = mx.fast.scaled_dot_product_attention
        out["sdpa_causal_s"] = _median_time(
            lambda: sdpa(q, k, k, scale=1.0, mask="causal"), repeats
        )
        out["sdpa_bias_s"] = _median_time(
            lambda: sdpa(q, k, k, scale=1.0, mask=masks[1]), repeats
        )
    rope = getattr(attn, "rope", None)
    if rope is not None:
        pos = mx.arange(L, dtype=mx.int32)
        out["rope_offset_s"] = _median_time(lambda: rope(q, offset=0), repeats)
        out["rope_positions_s"] = _median_time(lambda: rope_at(rope, q, pos), repeats)
    return out


def profile(s, method="divprune", keep=0.25, repeats=3) -> dict:
    """Stage timings (seconds, medians) of one request on subject ``s``."""
    model, sample = s.model, s.sample
    apply(model, method=method, keep=keep, restore=True)
    feats = adapter_for(model).encode(model, sample["pixel_values"], sample).features
    mx.eval(feats)
    side = int(round(feats.shape[1] ** 0.5))
    scores = {"grid": (side, side)} if method == "pool" else {}

    def reduce_with(restore):
        return lambda: reduce(
            feats, method, keep=keep, restore=restore, **scores
        ).features

    out = dict(model=s.name, method=method, keep=keep)
    out["core_reduce_base_s"] = _median_time(reduce_with(False), repeats)
    out["core_reduce_restore_s"] = _median_time(reduce_with(True), repeats)
    stages = {}
    for variant in ("base", "restore"):
        apply(model, method=method, keep=keep, restore=variant == "restore")
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            prep = prepare_tokens(model, sample)
            total = time.perf_counter() - t0
            runs.append((prep.vision_s, prep.reduce_s, total - prep.vision_s - prep.reduce_s,
                         *_prefill(model, prep)))  # fmt: skip
        med = [statistics.median(c) for c in zip(*runs)]
        for name, v in zip(
            ("vision", "reduce", "setup", "prefill", "decode_step"), med
        ):
            stages[f"{name}_{variant}_s"] = v
    out.update(stages)
    out.update(_layer_ops(model, prep, repeats))
    out["layers"] = len(adapter_for(model).layers(model))
    remove(model)
    return out
