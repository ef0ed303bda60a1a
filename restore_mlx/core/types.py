"""The one result type every reducer returns and every later stage consumes."""

from dataclasses import dataclass

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
