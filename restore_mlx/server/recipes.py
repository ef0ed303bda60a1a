"""What the server does to one request's image: the ``restore`` field, the reduction
per request, and the reductions it keeps for the next turn of a chat.

No mlx-vlm server internals here (those are in ``hooks``). A request's body may carry
``"restore": {...}``: ``{"preset": "extreme-89"}``, RestoreConfig fields such as
``{"method": "divprune", "keep": 0.3}`` (on top of the server's recipe, or of the
named preset), or ``{"off": true}``. Without it the server's recipe applies.

Multi-turn: a chat re-sends the image every turn. The first reduction of an image under
a recipe is kept (``Reductions``, keyed by the image's pixels and the recipe) and every
later turn reuses it: the tower does not run again and the reduced prefix is the same
tokens, positions and sizes, so mlx-vlm's prefix cache can serve it. For methods that
read the text (FastV, DART) this means the reduction follows the first question asked
about the image, not each new one.
"""

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional

import mlx.core as mx
import numpy as np

from ..adapters import adapter_for
from ..config import RestoreConfig
from ..errors import RestoreError, UnsupportedMethod
from ..integration import _resolve, encode_image, prepare_tokens, reads_cls_attention

FIELD = "restore"


class BadRestoreField(RestoreError):
    """A request's ``restore`` field cannot be served (HTTP 400)."""


@dataclass
class RequestRecipe:
    """One request's recipe (None: run unreduced) and what happened to its image."""

    config: Optional[RestoreConfig]
    report: dict = field(default_factory=dict)


def parse_field(value, default: RestoreConfig) -> Optional[RestoreConfig]:
    """The recipe a ``restore`` field asks for (None: off); BadRestoreField if bad."""
    if value is None:
        return default
    if not isinstance(value, dict):
        raise BadRestoreField(
            f'\'restore\' must be an object such as {{"preset": "mobile-50"}}, '
            f'{{"method": "divprune", "keep": 0.3}} or {{"off": true}}; '
            f"got {value!r}"
        )
    fields = dict(value)
    if fields.pop("off", False) is True:
        return None
    preset = fields.pop("preset", None)
    try:
        return _resolve(preset, None if preset else default, fields)
    except ValueError as e:
        raise BadRestoreField(f"bad 'restore' field {value!r}: {e}") from None


def check_runnable(model, config: Optional[RestoreConfig]) -> None:
    """UnsupportedMethod, before any work, for a method this model cannot run (a
    [CLS]-based method on a llava tower without [CLS]; other towers have substitutes).
    """
    if config is None or not reads_cls_attention(config.method):
        return
    if model.config.model_type == "llava" and not has_cls_token(model):
        raise UnsupportedMethod(
            f"method {config.method!r} reads [CLS] attention, which the "
            f"{model.config.model_type} vision tower of this model does not have; "
            "use a method without it, e.g. divprune"
        )


def has_cls_token(model) -> bool:
    """Whether the vision tower's features come with a [CLS] token (CLIP in llava
    with the default feature strategy; Qwen and SigLIP towers have none)."""
    vision = getattr(model.vision_tower, "vision_model", None)
    embeddings = getattr(vision, "embeddings", None)
    if getattr(embeddings, "class_embedding", None) is None:
        return False
    return getattr(model, "vision_feature_select_strategy", "default") == "default"


def recipe_key(config: RestoreConfig) -> str:
    return repr(config)


def image_key(pixel_values) -> str:
    """A stable digest of an image as the processor prepared it."""
    data = np.array(pixel_values.astype(mx.float32))
    return hashlib.sha256(data.tobytes() + str(data.shape).encode()).hexdigest()


class Reductions:
    """The reductions of the last ``size`` (image, recipe) pairs, with their
    encodings, so that a later turn about the same image reuses both."""

    def __init__(self, size: int = 64):
        self.size = size
        self._kept = OrderedDict()
        self.hits = 0

    def prepare(self, model, sample, config: RestoreConfig):
        """``prepare_tokens`` for ``sample``, reusing an earlier turn's reduction."""
        key = (image_key(sample["pixel_values"]), recipe_key(config))
        kept = self._kept.get(key)
        if kept is None:
            encoded = encode_image(model, sample, config=config)
            prepared = prepare_tokens(model, sample, config=config, encoded=encoded)
            prepared.vision_s = encoded.vision_s
            self._kept[key] = (encoded, prepared.reduction)
            while len(self._kept) > self.size:
                self._kept.popitem(last=False)
            return prepared, False
        self._kept.move_to_end(key)
        self.hits += 1
        encoded, reduction = kept
        prepared = prepare_tokens(
            model, sample, config=config, encoded=encoded, reduction=reduction
        )
        return prepared, True


def describe(prepared, reused: bool) -> dict:
    """The ``usage.restore`` fields of a reduced request."""
    return {
        "visual_tokens_before": prepared.visual_tokens_before,
        "visual_tokens_after": prepared.visual_tokens_after,
        "prompt_tokens_prefilled": prepared.prompt_tokens,
        "reused_reduction": reused,
    }


def supports(model) -> bool:
    """Whether the server reduces this model's images: an architecture whose reduced
    requests continuous batching carries (``BATCHABLE`` adapters); others are served
    as mlx-vlm serves them."""
    try:
        adapter = adapter_for(model)
    except RestoreError:
        return False
    return getattr(adapter, "BATCHABLE", False)
