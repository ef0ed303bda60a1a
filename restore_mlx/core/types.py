"""The one result type every reducer returns and every later stage consumes."""

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx


@dataclass(frozen=True)
class Reduction:
    """Visual tokens after reduction, with the bookkeeping RESTORE needs.

    Shapes, for a batch of B images of N visual tokens reduced to M:

    - ``features``   [B, M, D]  reduced token features (size-weighted means for groups).
    - ``sizes``      [B, M]     int32, how many original tokens each reduced token stands
                                for; sums to N per row.
    - ``assignment`` [B, N]     int32, index in 0..M-1 of the reduced token each original
                                token belongs to.
    - ``positions``  [B, M]     int32, original index (0..N-1) of each reduced token
                                (median member by default); strictly increasing per row,
                                because reduced tokens are ordered by it.
    - ``merged``     [B, M]     bool, True where the token came from anchor merging rather
                                than being kept by the base reducer (for overlays/ablations).
    """

    features: mx.array
    sizes: mx.array
    assignment: mx.array
    positions: mx.array
    merged: mx.array

    @property
    def num_tokens(self) -> int:
        return self.features.shape[1]


@dataclass(frozen=True)
class Segment:
    """A run of visual tokens reduced on its own: ``length`` tokens from ``offset`` in
    the prompt's list of visual tokens, laid out on ``grid`` (h, w) or None, belonging
    to image ``image``. With ``reducible`` False (e.g. row separators) its tokens are
    kept as they are and take no part in the budget."""

    offset: int
    length: int
    grid: Optional[tuple] = None
    image: int = 0
    reducible: bool = True
