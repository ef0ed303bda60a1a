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

from .adapters.contract import ReducedLayout, RopeFrequencies
from .adapters.patching import rope_at
from .core import calibration as cal


@dataclass(frozen=True)
class Calibration:
    """A prompt's attention biases, kept factored.

    ``sizes`` (layer 0, later layers) ``log s`` per key [P] float32, or None without the
    size bias; ``positions`` [P] or [3, P] and ``tables`` the decay table(s) for the
    distance bias, or None without it; ``dtype`` the model's.
    """

    sizes: Optional[tuple]
    positions: Optional[mx.array]
    tables: Optional[mx.array]
    dtype: mx.Dtype

    def prefill(self, offset: int, end: int) -> tuple:
        """Mask rows (layer 0, later layers) [end - offset, end] for prompt queries
        ``offset..end-1`` over keys ``0..end-1``."""
        dist = None
        if self.positions is not None:
            pos = self.positions
            dist = cal.distance_bias(pos[..., offset:end], pos[..., :end], self.tables)
        first, true = self.sizes or (None, None)
        later = cal.prefill_mask(
            true, dist, offset=offset, num_keys=end, dtype=self.dtype
        )
        if first is true:  # layer 0 differs only with its own (uniform) sizes
            return later, later
        layer0 = cal.prefill_mask(
            first, dist, offset=offset, num_keys=end, dtype=self.dtype
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
    or None; ``visual`` [P] bool, True at visual tokens (for the attention trace).
    """

    ids: mx.array
    rope: Optional[mx.array] = None
    shift: int = 0
    calibration: Optional[Calibration] = None
    visual: Optional[mx.array] = None

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
    if cfg.restore and cfg.distance_bias:
        positions, freqs = bias_positions(cfg, lay, flat, freqs)
        tables = distance_tables(freqs, positions)
    calibration = None
    if log_sizes is not None or positions is not None:
        calibration = Calibration(log_sizes, positions, tables, dtype)
        mx.eval([a for a in (log_sizes, tables) if a is not None])
    return Prompt(lay.input_ids, lay.rope, lay.shift, calibration, visual)


def bias_positions(cfg, lay: ReducedLayout, flat, freqs: RopeFrequencies) -> tuple:
    """(positions, frequencies) the distance bias is measured with.

    The layout's own: [P] for 1-D RoPE, (t, h, w) [3, P] for M-RoPE with each frequency
    on its axis (``distance_positions="per_axis"``). With ``"flat"`` an M-RoPE prompt
    is measured on ``flat``, its 1-D flattened index, with every frequency as 1-D RoPE
    has them: RESTORE's published 1-D form, for comparison.
    """
    positions = lay.bias_positions
    if cfg.distance_positions == "per_axis" or positions.ndim == 1:
        return positions, freqs
    if flat is None:
        raise ValueError("distance_positions='flat' needs the flattened prompt index")
    return flat.astype(mx.int32), RopeFrequencies(freqs.thetas)


def distance_tables(freqs: RopeFrequencies, positions: mx.array) -> mx.array:
    """The decay table(s) covering every distance among ``positions``."""
    return cal.table_for(freqs.thetas, positions, freqs.axes)


@dataclass
class Plan:
    """What the attention layers do in one forward of the language model."""

    rope: object = None  # None: mlx-vlm's own positions; int offset or [L] positions
    masks: Optional[tuple] = None  # (layer 0, later layers), each [L, S] additive
    trace: Optional[list] = None  # visual attention share per layer, when tracing
    visual: Optional[mx.array] = None  # [S] bool, keys that are visual

    def mask(self, layer: int, given):
        """The mask layer ``layer`` uses: the RESTORE bias, or the caller's own."""
        if self.masks is None:
            return given
        return self.masks[0] if layer == 0 else self.masks[1]

    def apply_rope(self, rope, x: mx.array) -> mx.array:
        """RoPE at this plan's positions with the layer's own ``nn.RoPE`` settings."""
        if not isinstance(self.rope, mx.array):
            return rope(x, offset=self.rope)
        return rope_at(rope, x, self.rope)

    def observe(self, q, k, mask, scale):
        """Trace: the last query's attention share on visual keys, mean over heads."""
        if self.trace is not None:
            self.trace.append(visual_share(q, k, mask, scale, self.visual))


def visual_share(q, k, mask, scale, visual) -> mx.array:
    """Share [B] of the last query's (calibrated) softmax mass on visual keys."""
    H, S = q.shape[1], k.shape[2]
    k = mx.repeat(k, H // k.shape[1], axis=1) if k.shape[1] != H else k
    logits = (q[:, :, -1:, :].astype(mx.float32) * scale) @ k.astype(
        mx.float32
    ).swapaxes(-1, -2)
    if isinstance(mask, mx.array):
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
        return Plan(
            rope=self._rope(offset, length),
            masks=self._masks(offset, length),
            trace=self.trace,
            visual=p.visual,
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
            mx.concatenate([mx.pad(h, pad, constant_values=cal.NEG_INF), d])
            for h, d in zip(head, decode)
        )

    def _decode_rows(self, start, end):
        """Decode mask rows for queries ``start..end-1``: per-key size bias (+ causal)."""
        p = self.prompt
        if self._decode is None or self._decode[0].shape[0] < end:
            # Grow geometrically so decode slices a ready vector each step.
            capacity = max(end, 2 * p.length)
            self._decode = p.calibration.decode_vectors(p.length, capacity)
        rows = tuple(v[None, :end] for v in self._decode)
        if end - start > 1:
            causal = cal.causal_mask(end - start, end, start).astype(rows[0].dtype)
            rows = tuple(r + causal for r in rows)
        return rows
