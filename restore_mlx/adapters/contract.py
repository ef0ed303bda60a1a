"""The adapter contract: what one architecture family provides to restore_mlx.

An adapter is a module (``adapters/<family>.py``) that defines every member of
``Adapter`` and is listed once in ``adapters/__init__.py``. It is the only code that
knows mlx-vlm's internals; everything it exchanges with the rest of the package is one
of the small types below. ``tests/test_adapter_contract.py`` checks every registered
adapter against this Protocol.
"""

from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable

import mlx.core as mx


@dataclass(frozen=True)
class ImageSpan:
    """The run of image tokens in a prompt: ``length`` tokens from index ``start``."""

    start: int
    length: int


@dataclass(frozen=True)
class VisionOutput:
    """An image through the vision tower, as the language model receives it.

    ``features`` [1, N, D]; ``grid`` the (h, w) layout of the N tokens, or None;
    ``cls`` [1, N] attention from [CLS] (or the tower's substitute) to each token, only
    when a method reads it, else None; ``extra`` other per-token arrays [1, N, D'] by
    name that reach the language model with the features (Qwen3-VL's deepstack
    levels): the integration reduces them with the features' groups.
    """

    features: mx.array
    grid: Optional[tuple] = None
    cls: Optional[mx.array] = None
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class LayoutRequest:
    """What ``layout`` needs to build one reduced prompt.

    ``sample`` the processor output (``input_ids`` [1, T], ``pixel_values``, extras);
    ``features`` [1, M, D] the reduced visual tokens; ``kept`` [M] the original index
    (0..N-1) each of them stands at; ``original_positions`` whether RoPE keeps those
    original positions (RESTORE) or re-indexes the reduced prompt contiguously;
    ``extra`` the encoder's ``VisionOutput.extra``, reduced alike ([1, M, D'] each).
    """

    sample: dict
    features: mx.array
    kept: mx.array
    span: ImageSpan
    original_positions: bool
    extra: dict = field(default_factory=dict)


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
    as the model's own rotary module assigns it; ``axes`` is None for 1-D RoPE."""

    thetas: mx.array
    axes: Optional[Sequence[int]] = None


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

    def image_span(self, model, input_ids) -> Optional[ImageSpan]:
        """The image tokens of ``input_ids`` [1, T], or None without an image."""

    def full_positions(self, model, input_ids, sample) -> mx.array:
        """RoPE positions [T] or [3, T] of the unreduced prompt."""

    def layout(self, model, request: LayoutRequest) -> ReducedLayout:
        """The reduced prompt for ``request``."""

    def rope_frequencies(self, model) -> RopeFrequencies:
        """The rotary frequencies the distance bias is computed from."""

    def layers(self, model) -> list:
        """The language model's decoder layers."""

    def run_layer(self, model, layer, h, positions) -> mx.array:
        """One decoder layer on the full prompt, without cache (in-LLM scoring)."""

    def queries_keys(self, model, layer, x, positions) -> tuple:
        """RoPE'd queries [B, H, T, D], keys [B, Hkv, T, D] and pre-RoPE keys
        [B, T, Hkv*D] of ``layer``'s attention on its normed input ``x``."""
