"""What to reduce and how: one settings object shared by the core, adapters and CLIs."""

from dataclasses import dataclass, replace
from typing import Optional

from .errors import RestoreError

POSITION_RULES = ("median", "first", "mean", "last")
ANCHOR_RULES = ("reference", "classic")
# Where the distance bias of an M-RoPE model measures distance: per (t, h, w) axis,
# each frequency on its own axis, or on the flattened 1-D prompt index with every
# frequency, as 1-D RoPE would. 1-D RoPE models measure the same way either way.
DISTANCE_POSITIONS = ("per_axis", "flat")
# How a prompt's budget is shared by its images and tiles: in proportion to their
# tokens, or where the reducer's ranking of all their tokens together puts it.
BUDGET_POLICIES = ("proportional", "global")


@dataclass(frozen=True)
class RestoreConfig:
    """A reduction recipe.

    ``method`` names a base reducer from ``restore_mlx.REDUCERS``. The budget is either
    ``keep`` (fraction of visual tokens kept, in (0, 1]) or ``tokens`` (an absolute count).
    ``restore`` switches RESTORE on as a whole; the four ``*_on`` flags switch its parts
    off one at a time for ablations (they are ignored when ``restore`` is False).
    ``budget_policy`` shares the budget of a prompt with several images or tiles:
    "proportional" to their tokens or "global" (see ``restore_mlx.core.ranking``).
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
    distance_positions: str = "per_axis"  # or "flat" (M-RoPE only; DISTANCE_POSITIONS)
    budget_policy: str = (
        "proportional"  # or "global" (several images/tiles; core.ranking)
    )

    def __post_init__(self):
        if self.distance_positions not in DISTANCE_POSITIONS:
            raise ValueError(
                f"distance_positions must be one of {DISTANCE_POSITIONS}, "
                f"got {self.distance_positions!r}"
            )
        if self.budget_policy not in BUDGET_POLICIES:
            raise RestoreError(
                f"budget_policy must be one of {BUDGET_POLICIES}, "
                f"got {self.budget_policy!r}"
            )

    def with_(self, **changes) -> "RestoreConfig":
        return replace(self, **changes)
