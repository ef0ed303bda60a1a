"""Where RESTORE's calibration applies: one request's prompt state, and the plan each
forward of the patched language model reads.

Architecture independent; the formulas are ``core.calibration``. ``reduced_prompt``
builds a request's ``Prompt`` (positions, decode shift, size and distance biases, kept
factored). ``apply`` hangs one ``RestoreState`` on the model; each forward of the
language model asks it for a ``Plan`` (once, not per layer): the RoPE positions of this
chunk and the bias mask rows of each layer, built for that chunk only, so the bias
never costs a [P, P] buffer. With no plan the patched classes run mlx-vlm's own code.
"""

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx

from .adapters.contract import ReducedLayout, RopeFrequencies, layer_kinds
from .adapters.patching import rope_at
from .core import calibration as cal


@dataclass(frozen=True)
class Calibration:
    """A prompt's attention biases, kept factored.

    ``sizes`` (layer 0, later layers) ``log s`` per key [P] float32, or None without the
    size bias; ``positions`` [P] or [3, P] and ``tables`` the decay table(s) of each
    layer kind for the distance bias, or None without it; ``dtype`` the model's;
    ``windows`` each kind's sliding window in cache slots (None: no window);
    ``of_layer`` the kind of each decoder layer (None: every layer is kind 0).
    """

    sizes: Optional[tuple]
    positions: Optional[mx.array]
    tables: Optional[tuple]
    dtype: mx.Dtype
    windows: tuple = (None,)
    of_layer: Optional[tuple] = None

    def kind(self, layer: int) -> int:
        """The layer kind (index into ``windows``/``tables``) of decoder ``layer``."""
        return 0 if self.of_layer is None else self.of_layer[layer]

    def prefill(self, offset: int, end: int) -> tuple:
        """Mask rows per layer kind, each (layer 0, later layers) [end - offset, end],
        for prompt queries ``offset..end-1`` over keys ``0..end-1``."""
        return tuple(
            self._prefill_kind(kind, offset, end) for kind in range(len(self.windows))
        )

    def _prefill_kind(self, kind: int, offset: int, end: int) -> tuple:
        dist = None
        if self.positions is not None:
            pos, table = self.positions, self.tables[kind]
            dist = cal.distance_bias(pos[..., offset:end], pos[..., :end], table)
        first, true = self.sizes or (None, None)
        window = self.windows[kind]
        later = cal.prefill_mask(
            true, dist, offset=offset, num_keys=end, window=window, dtype=self.dtype
        )
        if first is true or self.kind(0) != kind:
            return later, later  # layer 0 differs only with its own (uniform) sizes
        layer0 = cal.prefill_mask(
            first, dist, offset=offset, num_keys=end, window=window, dtype=self.dtype
        )
        return layer0, later

    def decode_vectors(self, length: int, capacity: int) -> tuple:
        """Per-key decode bias vectors (layer 0, later layers) [capacity] for a prompt
        of ``length``: the prompt keys' size bias, 0 for generated keys."""
        if self.sizes is None:
            sizes = (mx.zeros((length,), dtype=self.dtype),) * 2
        else:
            sizes = tuple(s.astype(self.dtype) for s in self.sizes)
        return tuple(cal.decode_bias(s, capacity, self.dtype) for s in sizes)


@dataclass
class Prompt:
    """One prepared request: the prompt as it is prefilled and cached.

    ``ids`` [1, P]; ``rope`` [P] int32 RoPE positions where mlx-vlm would not get them
    right by itself (1-D RoPE at original positions), else None; ``shift`` how far
    decode positions move past the cache offset; ``calibration`` the attention biases,
    or None; ``visual`` [P] bool, True at visual tokens (for the attention trace);
    ``batchable`` whether continuous batching may carry it (``adapters.batching``).
    """

    ids: mx.array
    rope: Optional[mx.array] = None
    shift: int = 0
    calibration: Optional[Calibration] = None
    visual: Optional[mx.array] = None
    batchable: bool = False  # the adapter's row plans follow mlx-vlm's batches

    @property
    def length(self) -> int:
        return self.ids.shape[1]


def reduced_prompt(
    cfg, lay: ReducedLayout, visual, slots, sizes, freqs, dtype, flat=None
):
    """The ``Prompt`` of a reduced request, biases as ``cfg`` switches them.

    ``visual`` [P] flags the visual tokens of ``lay.input_ids``; ``slots`` [K] are the
    indices of the reduced ones (the size bias's visual keys) and ``sizes`` [K] their
    sizes; ``freqs`` the model's ``RopeFrequencies``, ``dtype`` its dtype; ``flat`` [P]
    the 1-D index of every token in the flattened prompt (``bias_positions``).
    """
    P = lay.input_ids.shape[1]
    log_sizes = positions = tables = None
    if cfg.restore and cfg.size_bias:
        true = cal.log_sizes(cal.key_sizes(P, slots, sizes))
        first = true
        if cfg.uniform_first_layer:
            first = cal.log_sizes(cal.key_sizes(P, slots, sizes, uniform=True))
        log_sizes = (first, true)
    kinds, of_layer = layer_kinds(freqs)
    if cfg.restore and cfg.distance_bias:
        positions, kinds = bias_positions(cfg, lay, flat, kinds)
        tables = tuple(distance_tables(kind, positions) for kind in kinds)
    calibration = None
    if log_sizes is not None or positions is not None:
        windows = tuple(kind.window for kind in kinds)
        calibration = Calibration(
            log_sizes, positions, tables, dtype, windows, of_layer
        )
        mx.eval([a for a in (log_sizes, tables) if a is not None])
    return Prompt(lay.input_ids, lay.rope, lay.shift, calibration, visual)


def bias_positions(cfg, lay: ReducedLayout, flat, kinds) -> tuple:
    """(positions, layer kinds' frequencies) the distance bias is measured with.

    The layout's own: [P] for 1-D RoPE, (t, h, w) [3, P] for M-RoPE with each frequency
    on its axis (``distance_positions="per_axis"``). With ``"flat"`` an M-RoPE prompt
    is measured on ``flat``, its 1-D flattened index, with every frequency as 1-D RoPE
    has them: RESTORE's published 1-D form, for comparison.
    """
    positions = lay.bias_positions
    if cfg.distance_positions == "per_axis" or positions.ndim == 1:
        return positions, kinds
    if flat is None:
        raise ValueError("distance_positions='flat' needs the flattened prompt index")
    flat_kinds = tuple(RopeFrequencies(k.thetas, window=k.window) for k in kinds)
    return flat.astype(mx.int32), flat_kinds


def distance_tables(freqs: RopeFrequencies, positions: mx.array) -> mx.array:
    """The decay table(s) covering every distance among ``positions``."""
    return cal.table_for(freqs.thetas, positions, freqs.axes)


@dataclass
class Plan:
    """What the attention layers do in one forward of the language model."""

    rope: object = None  # None: mlx-vlm's own positions; int offset or [L] positions
    masks: Optional[tuple] = (
        None  # per layer kind (layer 0, later), each [L, S] additive
    )
    trace: Optional[list] = None  # visual attention share per layer, when tracing
    visual: Optional[mx.array] = None  # [S] bool, keys that are visual
    of_layer: Optional[tuple] = None  # layer kind of each decoder layer (None: one)

    def mask(self, layer: int, given, keys: Optional[mx.array] = None):
        """The mask layer ``layer`` uses: the RESTORE bias, or the caller's own.

        ``keys`` [S] the prompt index of each key the layer's cache returns, in its
        order, where that is not ``0..S-1`` (a ring buffer); the bias follows them."""
        if self.masks is None:
            return given
        pair = self.masks[0 if self.of_layer is None else self.of_layer[layer]]
        rows = pair[0] if layer == 0 else pair[1]
        return rows if keys is None else mx.take(rows, keys, axis=-1)

    def apply_rope(self, rope, x: mx.array) -> mx.array:
        """RoPE at this plan's positions with the layer's own ``nn.RoPE`` settings."""
        if not isinstance(self.rope, mx.array):
            return rope(x, offset=self.rope)
        return rope_at(rope, x, self.rope)

    def observe(self, q, k, mask, scale, keys: Optional[mx.array] = None):
        """Trace: the last query's attention share on visual keys, mean over heads
        (``keys`` as for ``mask``)."""
        if self.trace is None:
            return
        visual = self.visual
        if keys is not None:
            span = max(visual.shape[0], int(mx.max(keys).item()) + 1)
            visual = mx.take(mx.pad(visual, (0, span - visual.shape[0])), keys)
        self.trace.append(visual_share(q, k, mask, scale, visual))


def visual_share(q, k, mask, scale, visual) -> mx.array:
    """Share [B] of the last query's (calibrated) softmax mass on visual keys."""
    H, S = q.shape[1], k.shape[2]
    k = mx.repeat(k, H // k.shape[1], axis=1) if k.shape[1] != H else k
    logits = (q[:, :, -1:, :].astype(mx.float32) * scale) @ k.astype(
        mx.float32
    ).swapaxes(-1, -2)
    if isinstance(mask, mx.array) and mask.dtype == mx.bool_:  # mlx-vlm's window
        logits = mx.where(mask[..., -1:, :S], logits, -mx.inf)
    elif isinstance(mask, mx.array):
        logits = logits + mask[..., -1:, :S].astype(mx.float32)
    probs = mx.softmax(logits, axis=-1)[:, :, 0, :]  # [B, H, S]
    on_visual = mx.pad(visual, (0, max(0, S - visual.shape[0])))[:S]
    return mx.sum(probs * on_visual, axis=-1).mean(axis=1)


class RestoreState:
    """The RESTORE state of one patched model: its config and the current request."""

    def __init__(self, config):
        self.config = config
        self.prompt: Optional[Prompt] = None
        self.plan: Optional[Plan] = None
        self.trace: Optional[list] = None
        self._live = self._checked = False
        self._decode = None  # decode bias vectors, grown on demand

    def set_prompt(self, prompt: Optional[Prompt]):
        """Start a new request (None: run unpatched until the next one)."""
        self.prompt, self.plan, self._decode = prompt, None, None
        self._live = self._checked = False

    def begin(self, inputs, length: int, offset: int) -> Optional[Plan]:
        """The plan for one forward of ``length`` tokens after ``offset`` cached ones."""
        p = self.prompt
        if p is None:
            return None
        if offset == 0 or not self._checked:
            # A new prefill (or the first forward after a reused cache prefix): is it
            # the prepared prompt? One host sync per request keeps a stale state from
            # biasing an unrelated prompt.
            self._checked = True
            end = offset + length
            self._live = (
                inputs is not None
                and end <= p.length
                and inputs.shape[-1] == length
                and bool(mx.array_equal(inputs, p.ids[:, offset:end]).item())
            )
        if not self._live:
            return None
        if p.rope is None and p.calibration is None and self.trace is None:
            return None
        calibration = p.calibration
        return Plan(
            rope=self._rope(offset, length),
            masks=self._masks(offset, length),
            trace=self.trace,
            visual=p.visual,
            of_layer=calibration.of_layer if calibration is not None else None,
        )

    def _rope(self, offset, length):
        p = self.prompt
        if p.rope is None:
            return offset + (p.shift if offset >= p.length else 0)
        end = offset + length
        if end <= p.length:
            return p.rope[offset:end]
        if offset >= p.length:
            return offset + p.shift
        tail = mx.arange(p.length, end, dtype=mx.int32) + p.shift
        return mx.concatenate([p.rope[offset:], tail])

    def _masks(self, offset, length):
        p = self.prompt
        if p.calibration is None:
            return None
        end = offset + length
        if end <= p.length:
            return p.calibration.prefill(offset, end)
        if offset >= p.length:
            # Decode: only the size bias applies (new tokens are size 1, no distance).
            return self._decode_rows(offset, end)
        # A chunk that crosses the end of the prompt (not done by mlx-vlm's generate).
        decode = self._decode_rows(p.length, end)
        head = p.calibration.prefill(offset, p.length)
        pad = ((0, 0), (0, end - p.length))
        return tuple(
            tuple(
                mx.concatenate([mx.pad(h, pad, constant_values=cal.NEG_INF), d])
                for h, d in zip(heads, decodes)
            )
            for heads, decodes in zip(head, decode)
        )

    def _decode_rows(self, start, end):
        """Decode mask rows per layer kind (layer 0, later layers) for queries
        ``start..end-1``: per-key size bias, causal and each kind's window."""
        calibration = self.prompt.calibration
        if self._decode is None or self._decode[0].shape[0] < end:
            # Grow geometrically so decode slices a ready vector each step.
            capacity = max(end, 2 * self.prompt.length)
            self._decode = calibration.decode_vectors(self.prompt.length, capacity)
        rows = tuple(v[None, :end] for v in self._decode)
        out = []
        for window in calibration.windows:
            if end - start > 1 or (window is not None and end > window):
                limit = cal.causal_mask(end - start, end, start, window)
                out.append(tuple(r + limit.astype(r.dtype) for r in rows))
            else:
                out.append(rows)
        return tuple(out)


def patched_state(model) -> RestoreState:
    """The ``RestoreState`` ``apply`` attached to ``model``; a ValueError if none."""
    state = getattr(model, "_restore_state", None)
    if state is None:
        raise ValueError(
            "the model is not patched: call restore_mlx.apply(model) first"
        )
    return state
