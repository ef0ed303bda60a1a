"""Batch-aware RESTORE: every row of a batched forward carries its own request.

mlx-vlm's continuous batching (``generate/ar.py``: ``PromptProcessingBatch`` and
``GenerationBatch``) runs several requests through the language model at once; a
batched cache has one offset and one left padding per row. ``RestoreState`` holds one
request, so a batch needs more:

- **Which request is a row?** A prepared request is ``register``-ed and gets an id; the
  caller passes it per row as the prompt keyword ``ROW_KWARG`` ([1, 1] int32, 0 for a
  request with nothing to apply). mlx-vlm batches per-row prompt keywords by itself, so
  every prefill forward sees ``[B, 1]`` ids, in row order, through padding and sorting.
- **Decode has no prompt keywords.** The rows are tagged on the cache instead: the
  first KV cache of the forward gets a subclass (ToMe-style class swap, per instance)
  whose ``filter``/``extend``/``merge`` keep the tags aligned with the cache rows, the
  three ways mlx-vlm reorders a batch.
- **The plan.** ``RowsPlan`` is a ``state.Plan`` with one row per request: RoPE at each
  row's own positions and an additive mask [B, 1, L, S] whose row b is request b's
  bias, placed at its key columns (after its left padding), combined with mlx-vlm's own
  padding/causal mask. Rows without a request get no bias and mlx-vlm's positions, so
  they run as unpatched (same tokens). With no request in the batch there is no plan.
"""

import itertools
from collections import OrderedDict

import mlx.core as mx

from ..core import calibration as cal
from ..errors import UnsupportedMethod

ROW_KWARG = "restore_row"
_REGISTRY_SIZE = 4096  # prepared requests kept; far above mlx-vlm's in-flight limit
_REGISTRY: "OrderedDict[int, RowPrompt]" = OrderedDict()
_IDS = itertools.count(1)


class RowPrompt:
    """One registered request (a ``state.Prompt``) and its decode bias, grown on demand."""

    def __init__(self, prompt):
        self.prompt = prompt
        self._decode = None

    @property
    def biased(self) -> bool:
        return self.prompt.calibration is not None

    def decode_vectors(self, end: int) -> tuple:
        """Per-key decode bias (layer 0, later layers), at least ``end`` long."""
        if self._decode is None or self._decode[0].shape[0] < end:
            length = self.prompt.length
            capacity = max(end, 2 * length)
            self._decode = self.prompt.calibration.decode_vectors(length, capacity)
        return self._decode


def register(prompt) -> int:
    """Keep ``prompt`` (a ``state.Prompt``) for the batched forwards; its row id."""
    rid = next(_IDS)
    _REGISTRY[rid] = RowPrompt(prompt)
    while len(_REGISTRY) > _REGISTRY_SIZE:
        _REGISTRY.popitem(last=False)
    return rid


def row_kwarg(rid: int = 0) -> mx.array:
    """The per-row prompt keyword for request ``rid`` (0: nothing to apply)."""
    return mx.array([[rid]], dtype=mx.int32)


def carries_request(prompt_kwargs) -> bool:
    """Whether a row's prompt keywords name a registered request (a reduced prompt
    with its own positions and bias), rather than a row run as unpatched."""
    rid = (prompt_kwargs or {}).get(ROW_KWARG)
    if not isinstance(rid, mx.array) or rid.size != 1:
        return False
    return _REGISTRY.get(int(rid.item())) is not None


class _TaggedCache:
    """Mixin for the first KV cache of a batch: ``_restore_rows`` follows its rows."""

    def filter(self, batch_indices):
        rows = self._restore_rows
        super().filter(batch_indices)
        self._restore_rows = [rows[i] for i in mx.array(batch_indices).tolist()]

    def extend(self, other):
        rows = self._restore_rows + rows_of(other)
        super().extend(other)
        self._restore_rows = rows

    @classmethod
    def merge(cls, caches):
        merged = cls._restore_base.merge(caches)
        tag(merged, [r for c in caches for r in rows_of(c)])
        return merged


_TAGGED = {}


def tag(cache, rows) -> None:
    """Tag ``cache`` with one ``RowPrompt`` (or None) per row (its class becomes a
    subclass of its own with ``_TaggedCache`` first; same state)."""
    base = getattr(type(cache), "_restore_base", type(cache))
    if base not in _TAGGED:
        name = f"RowTagged{base.__name__}"
        _TAGGED[base] = type(name, (_TaggedCache, base), {"_restore_base": base})
    cache.__class__ = _TAGGED[base]
    cache._restore_rows = list(rows)


def rows_of(cache) -> list:
    """The rows' requests of ``cache``: its tags, else None for every row."""
    rows = getattr(cache, "_restore_rows", None)
    return list(rows) if rows is not None else [None] * batch_size(cache)


def batch_size(cache) -> int:
    if isinstance(cache.offset, mx.array):
        return cache.offset.size
    keys = getattr(cache, "keys", None)
    return keys.shape[0] if isinstance(keys, mx.array) else 1


def first_kv_cache(cache):
    """The first layer cache with an offset (conv/linear layers' caches have none)."""
    return next((c for c in cache or () if hasattr(c, "offset")), None)


def is_batched(cache) -> bool:
    """Whether ``cache`` holds several rows (one offset per row)."""
    return cache is not None and batch_size(cache) > 1


def tagged(cache) -> bool:
    return getattr(cache, "_restore_rows", None) is not None


def plan_rows(cache, rows_ids, length: int):
    """The ``RowsPlan`` of one forward of ``length`` tokens over ``cache`` (the first
    KV cache): rows named by ``rows_ids`` [B, 1] (prefill), else by the cache's tags
    (decode). None when no row has anything to apply."""
    if rows_ids is not None:
        rows = [_REGISTRY.get(i) for i in rows_ids.reshape(-1).tolist()]
        if cache is not None:
            tag(cache, rows)
    else:
        rows = rows_of(cache)
    if all(r is None for r in rows):
        return None
    _check_batchable(rows)
    return RowsPlan(rows, _geometry(cache, len(rows)), length)


def _check_batchable(rows) -> None:
    """Refuse, rather than mis-bias, rows of architectures whose batched forward the
    row plans do not follow (sliding-window ring buffers, deepstack levels, hybrid
    layer caches): their adapters do not declare ``BATCHABLE``."""
    for row in rows:
        p = row.prompt if row is not None else None
        if p is not None and not p.batchable and (p.rope is not None or row.biased):
            raise UnsupportedMethod(
                "continuous batching of reduced prompts is supported for llava, "
                "qwen2_vl and qwen2_5_vl only; run this model's reduced requests "
                "one at a time (restore_mlx.generate)"
            )


def _geometry(cache, rows: int) -> tuple:
    """Per-row (tokens cached before this forward, left padding) as int lists."""
    if cache is None:
        return [0] * rows, [0] * rows
    offset = cache.offset
    if not isinstance(offset, mx.array):
        return [int(offset)] * rows, [0] * rows
    pad = getattr(cache, "left_padding", None)
    pads = pad.tolist() if isinstance(pad, mx.array) else [0] * rows
    return offset.tolist(), pads


class RowsPlan:
    """A ``state.Plan`` for a batch: per-row RoPE positions and bias."""

    trace = None
    visual = None

    def __init__(self, rows, geometry, length: int):
        offsets, pads = geometry
        self.offsets = mx.array(offsets, dtype=mx.int32)
        self.positions = _positions(rows, offsets, length)
        self.masks = _masks(rows, offsets, pads, length)
        self.of_layer = _of_layer(rows)
        self._valid = (offsets, pads, length)

    def mask(self, layer: int, given, keys=None):
        """Row b's bias on its own key columns, within mlx-vlm's mask ``given``."""
        if self.masks is None:
            return given
        pair = self.masks[0 if self.of_layer is None else self.of_layer[layer]]
        bias = pair[0] if layer == 0 else pair[1]
        if isinstance(given, mx.array) and given.dtype != mx.bool_:
            return bias + given
        valid = given if isinstance(given, mx.array) else _validity(*self._valid)
        # Finite, not -inf: a padding query sees no key at all, and an all -inf row
        # would put NaN into the padding's keys (mlx-vlm's boolean mask does not).
        return mx.where(valid, bias, mx.finfo(bias.dtype).min / 2)

    def apply_rope(self, rope, x: mx.array) -> mx.array:
        """RoPE at every row's own positions (mlx-vlm's, for rows without a request)."""
        if self.positions is None:
            return rope(x, offset=self.offsets)
        return rope_rows(rope, x, self.positions)

    def observe(self, q, k, mask, scale, keys=None):
        """Attention traces are for single requests (``inspect_prefill``)."""


def _row_positions(row, q0: int, length: int) -> mx.array:
    q = mx.arange(q0, q0 + length, dtype=mx.int32)
    p = row.prompt if row is not None else None
    if p is None or p.rope is None:
        return q
    inside = (q >= 0) & (q < p.length)
    table = p.rope[mx.clip(q, 0, p.length - 1)]
    return mx.where(inside, table, mx.where(q >= p.length, q + p.shift, q))


def _positions(rows, offsets, length):
    if all(r is None or r.prompt.rope is None for r in rows):
        return None
    return mx.stack([_row_positions(r, q, length) for r, q in zip(rows, offsets)])


def _of_layer(rows):
    """The layer kinds of the batch's model (every biased row has the same)."""
    for row in rows:
        if row is not None and row.biased:
            return row.prompt.calibration.of_layer
    return None


def _row_masks(row, q0: int, pad: int, length: int, dtype, kinds: int) -> tuple:
    """Row bias per layer kind, each (layer 0, later layers) [L, S] in the row's key
    columns. Padding queries, padding keys and rows without bias get 0: mlx-vlm's own
    mask (or ``_validity``) masks padding, so those rows run as unpatched."""
    end, width = q0 + length, pad + q0 + length
    if row is None or not row.biased:
        zero = mx.zeros((length, width), dtype=dtype)
        return ((zero, zero),) * kinds
    P = row.prompt.length
    if q0 >= P:  # decode: the size bias of every cached key, causal among new ones
        vectors = row.decode_vectors(end)
        rows = tuple(mx.broadcast_to(v[None, :end], (length, end)) for v in vectors)
        if length > 1:
            causal = cal.causal_mask(length, end, q0)
            rows = tuple(r + causal for r in rows)
        placed = ((0, 0), (pad, 0))
        pair = tuple(mx.pad(r.astype(dtype), placed) for r in rows)
        return (pair,) * kinds
    # Prefill: the prompt's own mask rows for its real queries.
    start, stop = max(q0, 0), min(end, P)
    placed = ((start - q0, end - stop), (pad, 0))
    out = []
    for pair in row.prompt.calibration.prefill(start, stop):
        pair = tuple(
            mx.pad(m, ((0, 0), (0, end - stop)), constant_values=cal.NEG_INF)
            for m in pair
        )
        out.append(tuple(mx.pad(r.astype(dtype), placed) for r in pair))
    return tuple(out)


def _masks(rows, offsets, pads, length):
    """Stacked row biases (layer 0, later layers) [B, 1, L, S], or None."""
    biased = [r for r in rows if r is not None and r.biased]
    if not biased:
        return None
    calibration = biased[0].prompt.calibration
    dtype, kinds = calibration.dtype, len(calibration.windows)
    per_row = [
        _row_masks(r, q, p, length, dtype, kinds)
        for r, q, p in zip(rows, offsets, pads)
    ]
    return tuple(
        tuple(mx.stack([m[k][i] for m in per_row])[:, None] for i in (0, 1))
        for k in range(kinds)
    )


def _validity(offsets, pads, length) -> mx.array:
    """[B, 1, L, S] True where a query may see a key: causal, after the row's left
    padding (what a batched cache's own mask says)."""
    q0 = mx.array(offsets, dtype=mx.int32)[:, None, None]
    pad = mx.array(pads, dtype=mx.int32)[:, None, None]
    width = pads[0] + offsets[0] + length
    cols = mx.arange(width, dtype=mx.int32)[None, None, :]
    queries = q0 + mx.arange(length, dtype=mx.int32)[None, :, None]
    return ((cols >= pad) & (cols - pad <= queries))[:, None]


def rope_rows(rope, x: mx.array, positions: mx.array) -> mx.array:
    """Apply ``rope`` (an ``nn.RoPE``) to x [B, H, L, D] at per-row, per-token
    ``positions`` [B, L]: every token becomes its own batch row at its own offset
    (``mx.fast.rope`` takes one offset per batch row)."""
    B, H, L, D = x.shape
    if L == 1:
        return rope(x, offset=positions[:, 0])
    tokens = x.transpose(0, 2, 1, 3).reshape(B * L, H, 1, D)
    out = rope(tokens, offset=positions.reshape(-1))
    return out.reshape(B, L, H, D).transpose(0, 2, 1, 3)


def batch_prompt_kwargs(model, input_ids, generate_kwargs: dict, rid: int = 0):
    """A prepared request as one row of mlx-vlm's ``BatchGenerator.insert``: its
    ``prompt_kwargs`` (embeddings, the request's own positions, its row id ``rid``)."""
    kwargs = dict(generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    mask = kwargs.pop("mask", None)  # the embedding step's only (gemma3's merge)
    embed = model.get_input_embeddings(input_ids, pixels, mask=mask, **kwargs)
    # The features are in the embeddings now; rows of different lengths cannot stack.
    kwargs.pop("cached_image_features", None)
    out = {**kwargs, **{k: v for k, v in embed.to_dict().items() if v is not None}}
    # Explicit positions win over the embedding helper's (as in generate_step).
    out.update({k: kwargs[k] for k in POSITION_KWARGS if k in kwargs})
    out[ROW_KWARG] = row_kwarg(rid)
    return out


POSITION_KWARGS = ("position_ids", "rope_deltas")
