"""What to reduce and how: one settings object shared by the core, adapters and CLIs."""

from dataclasses import dataclass, replace
from typing import Optional

POSITION_RULES = ("median", "first", "mean", "last")
ANCHOR_RULES = ("reference", "classic")


@dataclass(frozen=True)
class RestoreConfig:
    """A reduction recipe.

    ``method`` names a base reducer from ``restore_mlx.REDUCERS``. The budget is either
    ``keep`` (fraction of visual tokens kept, in (0, 1]) or ``tokens`` (an absolute count).
    ``restore`` switches RESTORE on as a whole; the four ``*_on`` flags switch its parts
    off one at a time for ablations (they are ignored when ``restore`` is False).
    """

    method: str = "divprune"
    keep: Optional[float] = 0.5
    tokens: Optional[int] = None
    restore: bool = True
    anchors: bool = (
        True  # distinctive anchor merging (else: base prunes to full budget)
    )
    positions: bool = True  # original RoPE positions (else: re-indexed contiguously)
    size_bias: bool = True  # log(size) on attention logits
    distance_bias: bool = True  # log(2 - c(d)) on prefill attention logits
    anchor_rule: str = "reference"  # or "classic" density-peak
    position_rule: str = "median"
    uniform_first_layer: bool = True  # layer 0 uses size N/n for every visual token

    def with_(self, **changes) -> "RestoreConfig":
        return replace(self, **changes)
