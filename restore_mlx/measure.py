"""One generation, timed: what ``restore-mlx-generate`` reports.

TTFT runs from the start of the request (vision tower and reduction included) to the
first token; prefill from handing the prepared prompt to mlx-vlm to the first token.
Peak memory is ``mx.get_peak_memory`` (works on Metal and CPU), reset per request.
"""

import time
from dataclasses import dataclass
from typing import Optional

from .errors import InputError
from .generation import reduced_call


@dataclass
class Stats:
    """What the CLI reports (and writes with ``--stats-json``)."""

    visual_tokens_before: int
    visual_tokens_after: int
    prompt_tokens: int
    prefill_s: float
    ttft_s: float
    generation_tps: float
    peak_memory_gb: float
    method: Optional[str]
    keep: Optional[float]
    restore: bool
    tokens: Optional[int] = None
    visual_tokens_per_image: Optional[list] = None  # [before, after] per image
    preset: Optional[str] = None
    generation_tokens: int = 0
    vision_s: float = 0.0
    reduce_s: float = 0.0


def measured_generate(model, processor, prompt, images, config, on_text=None, **kwargs):
    """Generate once and time it: ``(PreparedPrompt or None, Stats)``.

    ``model`` must have RESTORE applied with ``config`` when there are ``images``;
    ``on_text`` receives each streamed piece of text. ``kwargs`` are those of
    ``mlx_vlm.generate``: ``eos_tokens`` stop generation as there, ``resize_shape``
    and ``processor_kwargs`` (a dict) go to the processor, the rest to mlx-vlm's
    ``stream_generate``. A rotating cache (``max_kv_size``) that a reduced prompt
    would wrap is an InputError, before generation starts.
    """
    import mlx.core as mx
    from mlx_vlm import stream_generate as vlm_stream_generate

    _stop_on(model, processor, kwargs.pop("eos_tokens", None))
    mx.reset_peak_memory()
    start = time.perf_counter()
    prepared = None
    if not images:  # nothing for the processor to shape
        kwargs = {k: v for k, v in kwargs.items() if k != "processor_kwargs"}
    if images:
        try:
            prepared, kwargs = reduced_call(model, processor, prompt, images, kwargs)
        except ValueError as e:  # e.g. a budget larger than the image's tokens
            raise InputError(str(e)) from e
    prefill_start, first, last = time.perf_counter(), None, None
    for result in vlm_stream_generate(
        model, processor, prompt, images or None, **kwargs
    ):
        first = first or time.perf_counter()
        last = result
        if on_text is not None:
            on_text(result.text)
    first = first or time.perf_counter()
    reduced = prepared is not None and prepared.reduction is not None
    stats = Stats(
        visual_tokens_before=prepared.visual_tokens_before if prepared else 0,
        visual_tokens_after=prepared.visual_tokens_after if prepared else 0,
        prompt_tokens=last.prompt_tokens if last else 0,
        prefill_s=first - prefill_start,
        ttft_s=first - start,
        generation_tps=last.generation_tps if last else 0.0,
        peak_memory_gb=mx.get_peak_memory() / 1e9,
        method=config.method if reduced else None,
        keep=config.keep if reduced else None,
        tokens=config.tokens if reduced else None,
        restore=bool(reduced and config.restore),
        generation_tokens=last.generation_tokens if last else 0,
        vision_s=prepared.vision_s if prepared else 0.0,
        reduce_s=prepared.reduce_s if prepared else 0.0,
        visual_tokens_per_image=(
            [list(p) for p in prepared.per_image()]
            if prepared and prepared.segments
            else None
        ),
    )
    return prepared, stats


def _stop_on(model, processor, eos_tokens) -> None:
    """The tokenizer's stopping criteria as ``mlx_vlm.generate`` sets them (its
    ``stream_generate``, used here, leaves them as they are): the model's EOS tokens,
    plus ``eos_tokens`` when given."""
    tokenizer = getattr(processor, "tokenizer", processor)
    criteria = getattr(tokenizer, "stopping_criteria", None)
    if criteria is None:
        return
    if eos_tokens is not None:
        criteria.add_eos_token_ids(eos_tokens)
    else:
        criteria.reset(model.config.eos_token_id)


def format_stats(stats: Stats, label: str = "") -> str:
    """The human-readable report the CLI prints after the answer."""
    prefill_tps = stats.prompt_tokens / stats.prefill_s if stats.prefill_s else 0.0
    lines = ["", "=" * 10]
    if stats.visual_tokens_before:
        before, after = stats.visual_tokens_before, stats.visual_tokens_after
        lines.append(f"Visual tokens: {before} -> {after} ({label})")
        per_image = stats.visual_tokens_per_image or []
        if len(per_image) > 1:
            lines += [
                f"  image {i + 1}: {b} -> {a}" for i, (b, a) in enumerate(per_image)
            ]
    lines += [
        f"Prompt: {stats.prompt_tokens} tokens, prefill {stats.prefill_s:.3f} s "
        f"({prefill_tps:.1f} tokens/s)",
        f"Time to first token: {stats.ttft_s:.3f} s",
        f"Generation: {stats.generation_tokens} tokens, "
        f"{stats.generation_tps:.1f} tokens/s",
        f"Peak memory: {stats.peak_memory_gb:.3f} GB",
    ]
    return "\n".join(lines)
