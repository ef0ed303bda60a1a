"""The one result type every reducer returns and every later stage consumes."""

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
import numpy as np


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
    kept as they are and take no part in the budget.

    ``row_stride`` > 0 (with a ``grid``): the tokens are ``grid`` rows of ``grid[1]``
    tokens, row r starting at ``offset + r * row_stride``; the gaps between rows hold
    another segment's tokens (e.g. a newline after every row), so a grid interrupted by
    separators is still one segment.
    """

    offset: int
    length: int
    grid: Optional[tuple] = None
    image: int = 0
    reducible: bool = True
    row_stride: int = 0

    def __post_init__(self):
        if self.row_stride and (
            self.grid is None or self.grid[0] * self.grid[1] != self.length
        ):
            raise ValueError("a segment with a row_stride needs a grid of its length")

    def indices(self) -> np.ndarray:
        """The index (into the prompt's visual tokens) of each of its tokens, in order."""
        if not self.row_stride:
            return np.arange(self.offset, self.offset + self.length)
        rows, cols = self.grid
        starts = self.offset + self.row_stride * np.arange(rows)
        return (starts[:, None] + np.arange(cols)[None]).reshape(-1)

    @property
    def end(self) -> int:
        """One past the last of its token indices."""
        return int(self.indices()[-1]) + 1
