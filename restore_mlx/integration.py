"""RESTORE inside mlx-vlm: ``apply``/``remove`` a patch, ``prepare_inputs`` per request,
``inspect_prefill`` for the eval harness.

Flow of one request (batch 1): the processor output goes through the vision tower once,
the method's scores are computed, ``restore_mlx.reduce`` reduces the visual tokens, and
the reduced prompt (text + M image tokens) is what mlx-vlm prefills and caches: pass
``prepared.input_ids`` and ``**prepared.generate_kwargs`` to ``mlx_vlm.stream_generate``.
The model keeps the request's positions and biases in its ``RestoreState``; every new
``prepare_inputs`` replaces them.

Several requests about one image (a multi-turn chat) can share one pass of the tower:
``encode_image`` once, then ``prepare_inputs(..., encoded=...)`` on every turn.
"""

import time
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import numpy as np

from .adapters import SUPPORTED, adapter_for
from .adapters.contract import LayoutRequest, visual_slots
from .adapters.patching import final_norm
from .adapters.processors import fix_processor
from .adapters.scores import method_scores, score_names
from .config import RestoreConfig
from .core.api import REDUCERS, reduce_alongside
from .core.budget import resolve_budget
from .core.segments import reduce_segments, whole
from .core.types import Reduction
from .presets import get_preset
from .state import Prompt, RestoreState, patched_state, reduced_prompt
from .trace import inspect_prefill

__all__ = [
    "SUPPORTED",
    "apply",
    "remove",
    "is_applied",
    "encode_image",
    "cached_image_kwargs",
    "prepare_inputs",
    "prepare_tokens",
    "tokenize_prompt",
    "inspect_prefill",
]


@dataclass(frozen=True, eq=False)
class EncodedImage:
    """One image through the vision tower (``encode_image``), reusable by every request
    whose prompt holds the same image: pass it as ``encoded=`` to ``prepare_inputs`` or
    ``prepare_tokens``, which then skip the tower.

    ``features`` [1, N, D] the visual tokens as the language model receives them;
    ``grid`` their (h, w) layout, or None; ``cls`` [1, N] [CLS] attention, computed
    only for a method that reads it (``cls_for`` names it), else None; ``vision_s``
    the tower's wall time; ``extra`` other per-token arrays [1, N, D'] the language
    model takes with the features (Qwen3-VL's deepstack levels), by name.
    """

    features: mx.array
    grid: Optional[tuple]
    cls: Optional[mx.array]
    vision_s: float
    cls_for: Optional[str] = None
    segments: Optional[tuple] = None
    extra: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return self.features.shape[1]


@dataclass
class PreparedPrompt:
    """One request, ready for ``mlx_vlm.stream_generate(model, processor, prompt, image,
    input_ids=p.input_ids, **p.generate_kwargs)``."""

    input_ids: mx.array
    generate_kwargs: dict
    reduction: Optional[Reduction]
    visual_tokens_before: int
    visual_tokens_after: int
    prompt_tokens: int
    vision_s: float = 0.0  # the tower in this call: 0.0 with a reused ``encoded``
    reduce_s: float = 0.0
    prompt: Optional[Prompt] = field(default=None, repr=False)
    segments: tuple = ()  # how the visual tokens split into images and tiles

    def per_image(self) -> list:
        """[(visual tokens before, after)] for each image of the prompt."""
        images = sorted({s.image for s in self.segments})
        kept = self.reduction.positions[0].tolist() if self.reduction else None
        out = []
        for i in images:
            mine = set()
            for s in self.segments:
                if s.image == i:
                    mine.update(s.indices().tolist())
            after = len(mine) if kept is None else sum(p in mine for p in kept)
            out.append((len(mine), after))
        return out


def _resolve(preset, config, overrides) -> RestoreConfig:
    cfg = get_preset(preset) if preset is not None else (config or RestoreConfig())
    if overrides:
        # One budget at a time: setting one clears the other (the default has keep=0.5).
        if overrides.get("tokens") is not None and "keep" not in overrides:
            overrides = {**overrides, "keep": None}
        if overrides.get("keep") is not None and "tokens" not in overrides:
            overrides = {**overrides, "tokens": None}
        try:
            cfg = cfg.with_(**overrides)
        except TypeError as e:
            raise ValueError(
                f"unknown RestoreConfig field in {sorted(overrides)}: {e}"
            ) from e
    if cfg.method not in REDUCERS:
        raise ValueError(f"unknown method {cfg.method!r}; known: {', '.join(REDUCERS)}")
    resolve_budget(1 << 30, keep=cfg.keep, tokens=cfg.tokens)  # bad budgets fail here
    return cfg


def apply(model, preset=None, *, config=None, **overrides):
    """Patch a loaded mlx-vlm ``model`` in place for RESTORE and return it.

    The recipe is the preset called ``preset``, else ``config``, else ``RestoreConfig()``,
    with ``overrides`` (RestoreConfig fields) on top. Re-applying replaces the recipe.
    Unsupported architectures raise ValueError listing ``SUPPORTED``.
    """
    adapter = adapter_for(model)
    cfg = _resolve(preset, config, overrides)
    state = getattr(model, "_restore_state", None)
    if state is None:
        state = RestoreState(cfg)
        adapter.patch(model, state)
        object.__setattr__(model, "_restore_state", state)
    state.config = cfg
    state.set_prompt(None)
    return model


def remove(model):
    """Undo ``apply``: original classes, no state. A no-op on an unpatched model."""
    if is_applied(model):
        adapter_for(model).unpatch(model)
        del model.__dict__["_restore_state"]
    return model


def is_applied(model) -> bool:
    """Whether ``apply`` has patched ``model`` (and no ``remove`` has undone it)."""
    return getattr(model, "_restore_state", None) is not None


def reads_cls_attention(method: str) -> bool:
    """Whether reducer ``method`` reads the tower's [CLS] attention, which
    ``encode_image`` then computes (and which an encoding must carry to serve it)."""
    return "cls_attention" in score_names(REDUCERS[method])


def encode_image(model, sample, *, config=None) -> EncodedImage:
    """Run the vision tower once on the image of ``sample`` (processor output, as for
    ``prepare_tokens``) and keep the result for ``encoded=``.

    [CLS] attention is computed when the method of ``config`` reads it; without
    ``config``, the applied recipe's method, and on an unpatched model the default
    recipe's (``RestoreConfig()``). Works on a patched or an unpatched model.
    """
    adapter = adapter_for(model)
    cfg = config or (model._restore_state.config if is_applied(model) else None)
    cfg = cfg or RestoreConfig()
    pixels = sample.get("pixel_values")
    if pixels is None:
        raise ValueError("the sample has no pixel_values: there is no image to encode")
    cls_for = cfg.method if reads_cls_attention(cfg.method) else None
    t0 = time.perf_counter()
    out = adapter.encode(model, pixels, sample, cls_for)
    mx.eval([a for a in (out.features, out.cls, *out.extra.values()) if a is not None])
    elapsed = time.perf_counter() - t0
    return EncodedImage(
        out.features, out.grid, out.cls, elapsed, cls_for, out.segments, out.extra
    )


def cached_image_kwargs(model, encoded: EncodedImage) -> dict:
    """Keywords that hand ``encoded`` to mlx-vlm itself (its ``cached_image_features``),
    so that an unpatched model's ``generate_step``/``stream_generate`` skips the tower
    too. The prompt must still pass the image's ``pixel_values``."""
    return adapter_for(model).image_kwargs(model, encoded.features, encoded.extra)


def _check_fits(model, adapter, encoded, n, cfg):
    """ValueError unless ``encoded`` can stand in for this prompt's image."""
    if encoded.tokens != n:
        raise ValueError(
            f"{n} image tokens in the prompt but {encoded.tokens} encoded features "
            "(another image, resolution or model?)"
        )
    width = _norm_weight(model).shape[0]
    if encoded.features.shape[-1] != width:
        raise ValueError(
            f"encoded features are {encoded.features.shape[-1]} wide but this "
            f"language model takes {width}: encoded by another model?"
        )
    if reads_cls_attention(cfg.method) and encoded.cls is None:
        raise ValueError(
            f"method {cfg.method!r} reads [CLS] attention, which this encoding lacks: "
            f"encode_image(model, sample, config=...) with method {cfg.method!r}"
        )


def prepare_inputs(
    model,
    processor,
    prompt,
    images,
    *,
    config=None,
    encoded=None,
    resize_shape=None,
    processor_kwargs=None,
) -> PreparedPrompt:
    """Process a chat-formatted ``prompt`` with ``images`` (paths or PIL images), reduce
    its visual tokens and arm the model for it. Only batch 1 (one prompt, at most one
    image) is supported, as in mlx-vlm's own generate. ``config`` overrides the applied
    recipe for this request only; ``encoded`` (from ``encode_image``) reuses an earlier
    pass of the vision tower over the same image; ``resize_shape`` and
    ``processor_kwargs`` go to the processor (see ``tokenize_prompt``)."""
    sample = tokenize_prompt(
        model,
        processor,
        prompt,
        images,
        resize_shape=resize_shape,
        processor_kwargs=processor_kwargs,
    )
    return prepare_tokens(model, sample, config=config, encoded=encoded)


def tokenize_prompt(
    model, processor, prompt, images, *, resize_shape=None, processor_kwargs=None
) -> dict:
    """Processor output for ``prompt`` and ``images``, tokenized exactly as
    ``mlx_vlm.stream_generate`` would tokenize them (the input of ``prepare_tokens``).
    ``resize_shape`` (one side or (height, width)) and ``processor_kwargs`` (a dict of
    extra processor arguments) are mlx-vlm's options of the same names.
    """
    from mlx_vlm.generate.dispatch import normalize_resize_shape
    from mlx_vlm.utils import prepare_inputs as vlm_prepare
    from mlx_vlm.utils import should_add_special_tokens

    fix_processor(processor)  # llava's processor fails under transformers 5 otherwise
    if images is None or isinstance(images, (str, bytes)) or hasattr(images, "size"):
        images = [] if images is None else [images]
    inputs = vlm_prepare(
        processor,
        images=list(images) or None,
        prompts=prompt,
        image_token_index=getattr(model.config, "image_token_index", None),
        resize_shape=normalize_resize_shape(resize_shape),
        add_special_tokens=should_add_special_tokens(
            model.config.model_type, processor
        ),
        **(processor_kwargs or {}),
    )
    return {k: v for k, v in inputs.items() if k != "attention_mask" and v is not None}


def prepare_tokens(
    model, sample, *, config=None, encoded=None, reduction=None
) -> PreparedPrompt:
    """``prepare_inputs`` from processor output ``sample`` (``input_ids`` [1, T],
    ``pixel_values`` and model extras such as ``image_grid_thw``). With ``encoded``
    (``encode_image`` of the same images) the vision tower does not run; ValueError
    when it does not fit the prompt or lacks the [CLS] attention the method reads.
    With ``reduction`` (a ``Reduction`` of these images under this recipe, e.g. an
    earlier turn's ``prepared.reduction``) nothing is scored or reduced again: the
    prompt gets exactly those tokens, positions and sizes (also for methods that read
    the text, such as FastV).

    Every image (and tile) of the prompt is a segment of its own: the budget applies to
    the whole prompt and is split over them (``core.segments``)."""
    state, adapter = patched_state(model), adapter_for(model)
    cfg = config or state.config
    ids = sample["input_ids"]
    if ids.ndim != 2 or ids.shape[0] != 1:
        raise ValueError(
            f"only batch 1 is supported, got input_ids of shape {ids.shape}"
        )
    spans = ()
    if sample.get("pixel_values") is not None:
        spans = adapter.image_spans(model, ids)
    if not spans:
        if encoded is not None:
            raise ValueError("an encoded image was given but the prompt has no image")
        return _unreduced(model, state, adapter, sample, None, 0.0)
    slots = visual_slots(spans)
    vision_s = 0.0
    if encoded is None:
        encoded = encode_image(model, sample, config=cfg)
        vision_s = encoded.vision_s
    _check_fits(model, adapter, encoded, slots.shape[0], cfg)
    segments = encoded.segments or whole(encoded.tokens, encoded.grid)
    reducible = sum(s.length for s in segments if s.reducible)
    if resolve_budget(reducible, keep=cfg.keep, tokens=cfg.tokens) == reducible:
        prepared = _unreduced(model, state, adapter, sample, (slots, encoded), vision_s)
        prepared.segments = tuple(segments)
        return prepared
    t1 = time.perf_counter()
    red = reduction or _reduce(model, adapter, sample, cfg, encoded, segments, slots)
    reduce_s = time.perf_counter() - t1
    request = LayoutRequest(
        sample, red.features, red.positions[0], spans, cfg.restore and cfg.positions,
        _reduce_extra(red, encoded, cfg),
    )  # fmt: skip
    lay = adapter.layout(model, request)
    prompt = _calibrated(model, adapter, cfg, lay, red, request, segments)
    prompt.batchable = getattr(adapter, "BATCHABLE", False)
    state.set_prompt(prompt)
    return PreparedPrompt(
        lay.input_ids, lay.generate_kwargs, red, slots.shape[0], red.num_tokens,
        lay.input_ids.shape[1], vision_s, reduce_s, prompt, tuple(segments),
    )  # fmt: skip


def _reduce(model, adapter, sample, cfg, encoded, segments, slots) -> Reduction:
    """The method's scores, then the reduction of every segment."""
    need = score_names(REDUCERS[cfg.method])
    scores = method_scores(model, adapter, sample, need, encoded, slots)
    red = reduce_segments(
        encoded.features, segments, cfg.method, keep=cfg.keep, tokens=cfg.tokens,
        restore=cfg.restore, anchors=cfg.anchors, anchor_rule=cfg.anchor_rule,
        position_rule=cfg.position_rule, budget_policy=cfg.budget_policy, **scores,
    )  # fmt: skip
    mx.eval(red.features, red.sizes, red.positions)
    return red


def _calibrated(model, adapter, cfg, lay, red, request, segments) -> Prompt:
    """The request's Prompt: which reduced-prompt tokens are visual, and the sizes of
    those the reduction touched (fixed tokens such as row separators count as text)."""
    positions = np.array(red.positions[0])
    kept = np.array(visual_slots(request.spans))[positions]
    index = np.searchsorted(np.array(request.columns), kept)  # both ascending
    reducible = np.ones(len(np.array(visual_slots(request.spans))), dtype=bool)
    for s in segments:
        reducible[s.indices()] = s.reducible
    own = np.flatnonzero(reducible[positions]).astype(np.int32)
    visual = np.zeros(lay.input_ids.shape[1], dtype=bool)
    visual[index] = True
    dtype = _norm_weight(model).dtype
    sizes = red.sizes[0][mx.array(own)]
    slots = mx.array(index[own].astype(np.int32))
    freqs = adapter.rope_frequencies(model)
    # The flattened index: where each token sits in the unreduced prompt (original
    # positions), or in the reduced one (re-indexed), as 1-D RoPE would place it.
    flat = request.columns
    if not request.original_positions:
        flat = mx.arange(lay.input_ids.shape[1], dtype=mx.int32)
    return reduced_prompt(
        cfg, lay, mx.array(visual), slots, sizes, freqs, dtype, flat=flat
    )


def _reduce_extra(red, encoded, cfg) -> dict:
    """The encoding's other per-token arrays, reduced with the features' groups."""
    return {
        name: reduce_alongside(
            red, x, cfg.method, restore=cfg.restore, anchors=cfg.anchors
        )
        for name, x in encoded.extra.items()
    }


def _norm_weight(model) -> mx.array:
    """The final norm's weight [D]: the language model's width and dtype."""
    owner, name = final_norm(model)
    return getattr(owner, name).weight


def _unreduced(model, state, adapter, sample, image, vision_s) -> PreparedPrompt:
    """A prompt that runs as mlx-vlm runs it (no image, or a budget that keeps all)."""
    ids = sample["input_ids"]
    kwargs = {k: v for k, v in sample.items() if k != "input_ids"}
    visual = mx.zeros((ids.shape[1],), dtype=mx.bool_)
    n = 0
    if image is not None:
        slots, encoded = image
        # Reuse the tower's output: the prefill merges it instead of re-encoding.
        kwargs.update(adapter.image_kwargs(model, encoded.features, encoded.extra))
        visual[slots] = True
        n = slots.shape[0]
    prompt = Prompt(ids=ids, visual=visual)
    state.set_prompt(prompt)
    return PreparedPrompt(ids, kwargs, None, n, n, ids.shape[1], vision_s, 0.0, prompt)
