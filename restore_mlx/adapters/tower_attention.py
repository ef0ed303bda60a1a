"""A [CLS]-attention substitute for Qwen vision towers (Qwen2-VL, 2.5-VL, 3-VL, 3.5).

VisPruner, HoloV and VisionZip rank patches by the attention [CLS] pays them; Qwen
towers have no [CLS] token. The substitute is the mean attention each patch *receives*
in the last vision block (the one whose output the patch merger turns into the visual
tokens): ``r_j = (1/S) sum_i mean_heads softmax(q_i k_j / sqrt(d))``, over the S patch
queries of the image (a query only sees the patches of its own attention segment, as
in the tower: frames, or windows on Qwen2.5-VL's windowed blocks), summed over each
merger group of ``spatial_merge_size^2`` patches. It sums to 1 over the visual tokens,
like [CLS] attention does, and marks the tokens the tower itself relies on most.

Towers return no attention maps, so it is recomputed from the hidden state entering
that block, captured while the tower runs, with the block's own norm, projections and
rotary embedding.
"""

import sys
from contextlib import contextmanager

import mlx.core as mx

from .patching import swap_class, unswap_class

# Queries per softmax block: bounds the [heads, chunk, S] buffer on large images.
_QUERY_CHUNK = 1024


class _CaptureInput:
    """Mixin for a vision block: remember what enters it, then run it unchanged."""

    def __call__(self, hidden_states, cu_seqlens, rotary_pos_emb):
        self._restore_seen.append((hidden_states, cu_seqlens, rotary_pos_emb))
        return super().__call__(
            hidden_states, cu_seqlens=cu_seqlens, rotary_pos_emb=rotary_pos_emb
        )


class Received:
    """The result of ``received_attention``: ``value`` [1, N] once the tower has run,
    None when no method asked for it."""

    value = None


@contextmanager
def received_attention(tower, thw, method):
    """Run the tower inside this block; with ``method`` (a reducer that reads
    ``cls_attention``), the yielded ``Received`` then holds the substitute [1, N]."""
    out = Received()
    if not method:
        yield out
        return
    block = tower.blocks[-1]
    seen = []
    swap_class(block, _CaptureInput, _restore_seen=seen)
    try:
        yield out
    finally:
        unswap_class(block, "_restore_seen")
    hidden, cu_seqlens, rotary = seen[-1]
    per_patch = _received_by_patch(block, hidden, cu_seqlens.tolist(), rotary)
    unit = tower.spatial_merge_size**2
    per_token = per_patch.reshape(-1, unit).sum(axis=-1)
    if hasattr(tower, "get_window_index"):
        # Qwen2.5-VL runs its blocks in window order; the merger's output is put
        # back in raster order by the inverse permutation, so the scores are too.
        window_index, _ = tower.get_window_index(thw)
        per_token = per_token[mx.argsort(window_index)]
    out.value = per_token[None]


def _received_by_patch(block, hidden, bounds, rotary) -> mx.array:
    """Mean over queries and heads of the attention each patch receives [S], float32."""
    attn = block.attn
    S = hidden.shape[0]
    rotate = sys.modules[type(attn).__module__].apply_rotary_pos_emb_vision
    qkv = attn.qkv(block.norm1(hidden)).reshape(S, 3, attn.num_heads, -1)
    q = rotate(qkv[None, :, 0], rotary)[0].transpose(1, 0, 2).astype(mx.float32)
    k = rotate(qkv[None, :, 1], rotary)[0].transpose(1, 0, 2).astype(mx.float32)
    parts = []
    for start, end in zip(bounds[:-1], bounds[1:]):
        keys = k[:, start:end].swapaxes(-1, -2)
        total = mx.zeros((end - start,), dtype=mx.float32)
        for first in range(start, end, _QUERY_CHUNK):
            queries = q[:, first : min(first + _QUERY_CHUNK, end)] * attn.scale
            probs = mx.softmax(queries @ keys, axis=-1)  # [heads, chunk, keys]
            total = total + probs.sum(axis=1).mean(axis=0)
        parts.append(total)
    return mx.concatenate(parts) / S
