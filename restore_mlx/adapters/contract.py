"""The adapter contract: what one architecture family provides to restore_mlx.

An adapter is a module (``adapters/<family>.py``) that defines every member of
``Adapter`` and is listed once in ``adapters/__init__.py``. It is the only code that
knows mlx-vlm's internals; everything it exchanges with the rest of the package is one
of the small types below. ``tests/test_adapter_contract.py`` checks every registered
adapter against this Protocol.
"""

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, Union, runtime_checkable

import mlx.core as mx
import numpy as np

from ..core.types import Segment


@dataclass(frozen=True)
class ImageSpan:
    """A run of image tokens in a prompt: ``length`` tokens from index ``start``. A
    prompt's visual tokens are the tokens of all its runs, in order."""

    start: int
    length: int


def visual_slots(spans) -> mx.array:
    """The prompt index [N] of every visual token of ``spans``, in order."""
    return mx.concatenate(
        [mx.arange(s.start, s.start + s.length, dtype=mx.int32) for s in spans]
    )


def kept_columns(length: int, spans, kept: mx.array) -> mx.array:
    """The unreduced-prompt index [P] of every token of the reduced prompt: text and
    the ``kept`` visual tokens (indices into ``visual_slots(spans)``), in order."""
    slots = np.array(visual_slots(spans))
    keep = np.ones(length, dtype=bool)
    keep[slots] = False
    keep[slots[np.array(kept).astype(np.int64)]] = True
    return mx.array(np.flatnonzero(keep).astype(np.int32))


@dataclass(frozen=True)
class VisionOutput:
    """An image through the vision tower, as the language model receives it.

    ``features`` [1, N, D], one row per visual token of the prompt, in prompt order;
    ``grid`` the (h, w) layout of the N tokens when they form one grid, or None;
    ``cls`` [1, N] attention from [CLS] (or the tower's substitute) to each token, only
    when a method reads it, else None; ``segments`` how the N tokens split into
    images, tiles and fixed tokens (None: one reducible segment on ``grid``);
    ``extra`` other per-token arrays [1, N, D'] by name that reach the language model
    with the features (Qwen3-VL's deepstack levels): the integration reduces them with
    the features' groups.
    """

    features: mx.array
    grid: Optional[tuple] = None
    cls: Optional[mx.array] = None
    segments: Optional[Sequence[Segment]] = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LayoutRequest:
    """What ``layout`` needs to build one reduced prompt.

    ``sample`` the processor output (``input_ids`` [1, T], ``pixel_values``, extras);
    ``features`` [1, M, D] the reduced visual tokens; ``kept`` [M] the original index
    (0..N-1, into ``visual_slots(spans)``) each of them stands at; ``spans`` the
    prompt's image runs; ``original_positions`` whether RoPE keeps those original
    positions (RESTORE) or re-indexes the reduced prompt contiguously; ``extra`` the
    encoder's ``VisionOutput.extra``, reduced alike ([1, M, D'] each).
    """

    sample: dict
    features: mx.array
    kept: mx.array
    spans: tuple
    original_positions: bool
    extra: dict = field(default_factory=dict)

    @property
    def columns(self) -> mx.array:
        """``kept_columns`` of this request: where each reduced token came from."""
        return kept_columns(self.sample["input_ids"].shape[1], self.spans, self.kept)


@dataclass(frozen=True)
class ReducedLayout:
    """The reduced prompt as it is prefilled and cached.

    ``input_ids`` [1, P]; ``rope`` [P] int32 positions the patched attention applies
    where mlx-vlm cannot be told them (1-D RoPE), else None; ``shift`` how far decode
    positions move past the cache offset (with ``rope``); ``bias_positions`` [P] or
    [3, P] the positions the distance bias is measured at; ``generate_kwargs`` what
    ``mlx_vlm.stream_generate`` takes besides ``input_ids``.
    """

    input_ids: mx.array
    bias_positions: mx.array
    generate_kwargs: dict = field(default_factory=dict)
    rope: Optional[mx.array] = None
    shift: int = 0


@dataclass(frozen=True)
class RopeFrequencies:
    """The language model's rotary frequencies ``thetas`` [K] (float32, any scaling
    folded in) and, for M-RoPE, the axis (0 = t, 1 = h, 2 = w) each one rotates with,
    as the model's own rotary module assigns it; ``axes`` is None for 1-D RoPE.
    ``window``: a sliding-window layer attends to the last ``window`` cache slots only
    (None: to every earlier key)."""

    thetas: mx.array
    axes: Optional[Sequence[int]] = None
    window: Optional[int] = None


WHOLE = (0.0, 0.0, 1.0, 1.0)


@dataclass(frozen=True)
class SegmentBox:
    """Where one segment's token grid lies on its image, for overlays.

    ``box`` the (left, top, right, bottom) fractions of the picture (as the user gave
    it) the grid is stretched over: a tile its cell of the tiling, a single view the
    whole picture. ``overview`` True for a downscaled view of the whole picture shown
    beside its tiles (thumbnail, global image, AnyRes base image): an overlay draws it
    on a panel of its own rather than over the tiles it would hide.
    """

    segment: Segment
    box: tuple = WHOLE
    overview: bool = False


def whole_picture(model, processor, picture, segments) -> tuple:
    """``segment_boxes`` of an architecture that shows the model each image once:
    every reducible segment over the whole picture."""
    return tuple(SegmentBox(s) for s in segments if s.reducible)


@dataclass(frozen=True)
class LayerFrequencies:
    """Rotary settings of a model whose layers differ (Gemma 3: sliding layers with
    one RoPE base and window, global layers with another): ``kinds`` the distinct
    ``RopeFrequencies``, ``of_layer[i]`` the index in ``kinds`` of decoder layer ``i``.
    Each kind gets its own bias mask."""

    kinds: tuple
    of_layer: tuple


def layer_kinds(freqs) -> tuple:
    """(kinds, of_layer) of an adapter's ``rope_frequencies``: one kind and None for a
    single ``RopeFrequencies``, else the ``LayerFrequencies`` fields."""
    if isinstance(freqs, LayerFrequencies):
        return tuple(freqs.kinds), tuple(freqs.of_layer)
    return (freqs,), None


@runtime_checkable
class Adapter(Protocol):
    """One architecture family. ``NAMES`` are the mlx-vlm model types it serves."""

    NAMES: tuple

    def patch(self, model, state) -> None:
        """Swap the classes of the language model and its attention layers so that
        they read ``state`` (a ``restore_mlx.state.RestoreState``); no weight changes.
        """

    def unpatch(self, model) -> None:
        """Undo ``patch``."""

    def encode(self, model, pixel_values, sample, need_cls=None) -> VisionOutput:
        """Run the vision tower; ``need_cls`` names the method when it reads ``cls``."""

    def cached_image_features(self, features: mx.array):
        """``features`` [1, N, D] in the form mlx-vlm's merge takes them as
        ``cached_image_features``."""

    def image_kwargs(self, model, features: mx.array, extra: dict) -> dict:
        """What ``mlx_vlm.stream_generate`` takes to merge visual tokens ``features``
        [1, N, D] (and their ``extra`` arrays, see ``VisionOutput``) instead of running
        the tower; with unreduced tokens the model must run as mlx-vlm runs it."""

    def image_spans(self, model, input_ids) -> tuple:
        """The runs of image tokens (``ImageSpan``) of ``input_ids`` [1, T], in order;
        empty without an image."""

    def full_positions(self, model, input_ids, sample) -> mx.array:
        """RoPE positions [T] or [3, T] of the unreduced prompt."""

    def layout(self, model, request: LayoutRequest) -> ReducedLayout:
        """The reduced prompt for ``request``."""

    def rope_frequencies(self, model) -> Union[RopeFrequencies, LayerFrequencies]:
        """The rotary frequencies the distance bias is computed from: one
        ``RopeFrequencies`` for every layer, or ``LayerFrequencies`` per layer."""

    def layers(self, model) -> list:
        """The language model's decoder layers."""

    def first_layer_input(self, model, embeds) -> mx.array:
        """What the language model's forward makes of ``inputs_embeds`` [B, T, D]
        before its first layer (Gemma scales them by sqrt(hidden); most keep them)."""

    def run_layer(self, model, layer, h, positions) -> mx.array:
        """One decoder layer on the full prompt, without cache (in-LLM scoring)."""

    def after_layer(self, model, index: int, h, slots, extra: dict) -> mx.array:
        """``h`` [1, T, D] as the LM passes it on after layer ``index`` (in-LLM
        scoring): what the LM adds between layers at the visual tokens ``slots`` [N],
        from the encoder's ``extra`` (Qwen3-VL's deepstack levels); else ``h``."""

    def queries_keys(self, model, layer, x, positions) -> tuple:
        """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and pre-RoPE keys
        [B, T, Hkv*D] of ``layer``'s attention on its normed input ``x``."""

    def segment_boxes(self, model, processor, picture, segments) -> tuple:
        """One ``SegmentBox`` per reducible segment of one image (``segments``, those
        of ``encode`` with that image's index), placed on ``picture`` (the PIL image
        as the model's processor received it) the way ``processor`` tiles it."""
