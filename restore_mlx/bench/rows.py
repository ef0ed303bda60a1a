"""The measuring loop of ``python -m restore_mlx.bench``: one model's rows (unpatched
mlx-vlm, each base reducer alone and with RESTORE, the unpatched decode at the reduced
context) timed in interleaved repeats, and the --reuse-vision encoding they share.
Why interleaved and what --reuse-vision changes: ``restore_mlx.bench.run``."""

import json
import sys
import time
from dataclasses import dataclass, replace

import mlx.core as mx
from mlx_vlm.generate.ar import generate_step
from mlx_vlm.models.cache import make_prompt_cache

from ..config import RestoreConfig
from ..integration import (
    apply,
    cached_image_kwargs,
    encode_image,
    prepare_tokens,
    reads_cls_attention,
    remove,
)
from .report import summarize
from .subject import Subject
from .timing import bias_bytes, fresh_row, kv_bytes, timed_generate

VARIANTS = ("base", "restore")
# Logged when a model's rows reuse one encoding: --from-log reads the mode back from it.
REUSE_MARK = "vision encoded once, reused by every row; tower timed once per repeat"


@dataclass(frozen=True)
class Reuse:
    """--reuse-vision: the model's image encoded once (``encode_image``) and the tower's
    wall time in the current repeat (timed separately, one call shared by every row)."""

    encoded: object
    vision_s: float = 0.0


def _stderr(*parts):
    print(*parts, file=sys.stderr, flush=True)


def run_unpatched(s: Subject, max_tokens: int, step, reuse=None) -> dict:
    """mlx-vlm alone. vision_s is a separate call of its own embedding step (tower,
    projector, merge); TTFT is the end-to-end ``generate_step`` to the first token.

    With ``reuse``, ``generate_step`` takes the encoded image through mlx-vlm's own
    ``cached_image_features`` (its embedding step then skips the tower) and TTFT is
    that plus the repeat's separately timed tower."""
    remove(s.model)
    ids, pixels, extra = s.split()
    resident = fresh_row()
    if reuse is None:
        t0 = time.perf_counter()
        mx.eval(s.model.get_input_embeddings(ids, pixels, **extra).inputs_embeds)
        vision_s = time.perf_counter() - t0
    else:
        vision_s = reuse.vision_s
        extra = {**extra, **cached_image_kwargs(s.model, reuse.encoded)}
    first, tps, cache = timed_generate(s.model, ids, pixels, extra, max_tokens, step)
    ttft = first if reuse is None else vision_s + first
    # None for caches without keys (linear-attention or convolution state of hybrids)
    s.kv_shape = [
        (c.keys.shape, c.keys.dtype) if getattr(c, "keys", None) is not None else None
        for c in cache
    ]
    return dict(
        vision_s=vision_s, reduce_s=0.0, setup_s=0.0, prefill_s=ttft - vision_s,
        ttft_s=ttft, decode_tps=tps, peak_memory_gb=mx.get_peak_memory() / 1e9,
        peak_extra_gb=mx.get_peak_memory() / 1e9 - resident,
        kv_bytes=kv_bytes(cache, ids.shape[1]), kept_tokens=s.visual_tokens,
        prompt_tokens=ids.shape[1],
    )  # fmt: skip


def run_restore(
    s: Subject, method, keep, variant, max_tokens, step, reuse=None,
    budget_policy="proportional",
) -> dict:  # fmt: skip
    """restore_mlx through its public API: ``apply``, ``prepare_tokens`` (vision,
    reduction, positions and biases), then the same ``generate_step`` call. With
    ``reuse``, ``prepare_tokens`` takes the encoded image and TTFT adds the repeat's
    separately timed tower instead of its own. ``budget_policy``: how several images
    share the budget (``RestoreConfig``)."""
    apply(
        s.model, method=method, keep=keep, restore=variant == "restore",
        budget_policy=budget_policy,
    )  # fmt: skip
    resident = fresh_row()
    t0 = time.perf_counter()
    encoded = reuse.encoded if reuse is not None else None
    prep = prepare_tokens(s.model, s.sample, encoded=encoded)
    prep_s = time.perf_counter() - t0
    vision_s = prep.vision_s if reuse is None else reuse.vision_s
    kwargs = dict(prep.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    first, tps, cache = timed_generate(
        s.model, prep.input_ids, pixels, kwargs, max_tokens, step
    )
    return dict(
        vision_s=vision_s, reduce_s=prep.reduce_s,
        setup_s=prep_s - prep.vision_s - prep.reduce_s, prefill_s=first,
        ttft_s=vision_s + prep_s - prep.vision_s + first, decode_tps=tps,
        peak_memory_gb=mx.get_peak_memory() / 1e9,
        peak_extra_gb=mx.get_peak_memory() / 1e9 - resident,
        kv_bytes=kv_bytes(cache, prep.prompt_tokens),
        kept_tokens=prep.visual_tokens_after, prompt_tokens=prep.prompt_tokens,
        bias_bytes=bias_bytes(prep.prompt, step),
    )  # fmt: skip


def run_reference_decode(s: Subject, length: int, max_tokens: int) -> float:
    """Unpatched decode tok/s with a KV cache of ``length`` tokens (filled with zeros:
    decode cost depends on the cache length, not its content). Compares decode at
    equal context with a reduced prompt of that length."""
    remove(s.model)
    cache = make_prompt_cache(s.model.language_model)
    for c, kv_shape in zip(cache, s.kv_shape):
        if kv_shape is None:  # linear-attention / convolution state: fixed size
            continue
        shape, dtype = kv_shape
        kv = mx.zeros((shape[0], shape[1], length, shape[3]), dtype=dtype)
        c.update_and_fetch(kv, kv)
    mx.eval([c.state for c, kv in zip(cache, s.kv_shape) if kv is not None])
    ids = s.sample["input_ids"][:, -1:]
    stamps = []
    for _ in generate_step(
        ids, s.model, None, None, max_tokens=max_tokens + 1, temperature=0.0,
        prompt_cache=cache,
    ):  # fmt: skip
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


# keep 1.0 reduces nothing: one measurement stands for every method and variant.
def _plan(keeps, methods):
    jobs = [("none", 1.0, "none")]
    for keep in keeps:
        if keep >= 1.0:
            jobs.append((methods[0], keep, "restore"))
        else:
            jobs += [(m, keep, v) for m in methods for v in VARIANTS]
        jobs.append(("ref", keep, "ref"))
    return jobs


def _encoding_recipe(methods) -> RestoreConfig:
    """A recipe whose ``encode_image`` serves every method: the first that reads
    [CLS] attention, if one does (the encoding then carries it), else any."""
    cls = [m for m in methods if reads_cls_attention(m)]
    return RestoreConfig(method=(cls or list(methods))[0])


def time_tower(s: Subject, recipe: RestoreConfig) -> float:
    """One separately timed pass of the vision tower (its result is dropped)."""
    mx.clear_cache()  # as every row starts
    return encode_image(s.model, s.sample, config=recipe).vision_s


def bench_subject(
    s: Subject, keeps, methods, repeats, max_tokens, step, log=None, reuse_vision=False,
    budget_policy="proportional",
):  # fmt: skip
    """All rows of one model: medians over ``repeats`` interleaved passes."""
    log = log or _stderr
    samples = {}
    jobs = _plan(keeps, methods)
    reuse, recipe = None, _encoding_recipe(methods)
    if reuse_vision:
        reuse = Reuse(encode_image(s.model, s.sample, config=recipe))
        log(f"[{s.name}] {REUSE_MARK}")
    log(f"[{s.name}] warm-up")
    # One patched row (tower, reducer, biases) and the unpatched LM on the prompt's
    # ids without the image: every code path once, one vision pass instead of three
    # (none with --reuse-vision: the encoding above has run the tower).
    run_restore(s, methods[0], min(keeps), "restore", 2, step, reuse, budget_policy)
    remove(s.model)
    ids, _, _ = s.split()
    timed_generate(s.model, ids, None, {}, 2, step)
    for r in range(repeats):
        t_rep = time.perf_counter()
        if reuse is not None:
            reuse = replace(reuse, vision_s=time_tower(s, recipe))
        for method, keep, variant in jobs if r % 2 == 0 else jobs[::-1]:
            key = (method, keep, variant)
            if method == "none":
                out = run_unpatched(s, max_tokens, step, reuse)
            elif method == "ref":
                length = s.prompt_tokens_at(keep)
                out = {"decode_tps": run_reference_decode(s, length, max_tokens)}
            else:
                out = run_restore(
                    s, method, keep, variant, max_tokens, step, reuse, budget_policy
                )
            # The repeat pairs a row with its base and reference of the same pass.
            out = {"repeat": r, **out}
            samples.setdefault(key, []).append(out)
            # One line per measurement, so a run cut short still leaves its data.
            log(json.dumps({"model": s.name, "job": key, **out}))
        log(f"[{s.name}] repeat {r + 1}/{repeats}: {time.perf_counter() - t_rep:.0f} s")
    return summarize(s.name, s.visual_tokens, samples)
