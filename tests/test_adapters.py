"""Adapter building blocks: per-token RoPE, plans across chunk boundaries, class swaps."""

import mlx.core as mx
import mlx.nn as nn
from conftest import tiny_llava

from restore_mlx.adapters import llava
from restore_mlx.adapters.patching import rope_at, swap_class, unswap_class
from restore_mlx.core import calibration as cal
from restore_mlx.state import Calibration, Prompt, RestoreState


def test_rope_at_contiguous_positions_equals_offset_rope():
    mx.random.seed(0)
    x = mx.random.normal((2, 4, 9, 16))
    for rope in (nn.RoPE(16, base=10000.0), nn.RoPE(16, traditional=True, scale=0.5)):
        got = rope_at(rope, x, mx.arange(5, 14))
        assert mx.array_equal(got, rope(x, offset=5)).item()
    # Gapped positions: each token as if alone at its own offset.
    rope = nn.RoPE(16)
    pos = mx.array([0, 1, 7, 8, 30, 31, 32, 33, 40])
    got = rope_at(rope, x, pos)
    for i, p in enumerate(pos.tolist()):
        alone = rope(x[:, :, i : i + 1], offset=p)
        assert mx.array_equal(got[:, :, i : i + 1], alone).item()


def _state(P=6, shift=4):
    sizes = cal.log_sizes(mx.array([1, 2, 3, 1, 1, 1]))
    pos = mx.array([0, 1, 3, 8, 9, 10])
    table = cal.decay_table(cal.rope_thetas(8, 100.0), 10)
    calibration = Calibration((mx.zeros((P,)), sizes), pos, table, mx.float32)
    state = RestoreState(None)
    ids = mx.arange(P)[None]
    state.set_prompt(Prompt(ids=ids, rope=pos, shift=shift, calibration=calibration))
    # The masks a one-shot build gives: every chunk must slice them exactly.
    dist = cal.distance_bias(pos, pos, table)
    masks = (cal.prefill_mask(None, dist), cal.prefill_mask(sizes, dist))
    return state, ids, masks


def test_plan_slices_prompt_rows_then_decode_rows():
    state, ids, masks = _state()
    plan = state.begin(ids[:, :4], 4, 0)
    assert plan.rope.tolist() == [0, 1, 3, 8]
    assert mx.array_equal(plan.masks[1], masks[1][:4, :4]).item()
    plan = state.begin(ids[:, 4:], 2, 4)
    assert mx.array_equal(plan.masks[0], masks[0][4:, :]).item()
    assert mx.array_equal(plan.masks[1], masks[1][4:, :]).item()
    plan = state.begin(mx.array([[3]]), 1, 6)
    assert plan.rope == 6 + 4
    # Decode: the per-key size bias (0 for generated keys), no distance bias.
    sizes = state.prompt.calibration.sizes[1]
    assert plan.masks[1].tolist() == [[0.0, *sizes[1:3].tolist(), 0, 0, 0, 0]]
    assert plan.masks[1].shape == (1, 7)


def test_chunk_across_the_prompt_end_matches_separate_rows():
    state, ids, masks = _state()
    state.begin(ids[:, :4], 4, 0)
    crossing = state.begin(None, 4, 4)  # rows 4, 5 (prompt) and 6, 7 (generated)
    assert crossing.rope.tolist() == [9, 10, 6 + 4, 7 + 4]
    head = masks[1][4:6, :6]
    assert mx.array_equal(crossing.masks[1][:2, :6], head).item()
    assert mx.all(crossing.masks[1][:2, 6:] == -mx.inf).item()
    decode_row = state.prompt.calibration.sizes[1].tolist() + [0.0, -mx.inf]
    assert crossing.masks[1][2].tolist() == decode_row


def test_stale_state_does_not_touch_another_prompt():
    state, ids, _ = _state()
    assert state.begin(ids[:, ::-1], 6, 0) is None
    assert state.begin(mx.array([[5]]), 1, 6) is None
    assert state.begin(ids, 6, 0) is not None


def test_swap_and_unswap_keep_parameters():
    model, _ = tiny_llava()
    attn = model.language_model.model.layers[0].self_attn
    before = dict(attn.parameters())
    cls = type(attn)
    swap_class(
        attn, llava.PositionedAttention, _restore=RestoreState(None), _restore_layer=0
    )
    assert type(attn) is not cls and isinstance(attn, cls)
    assert dict(attn.parameters()).keys() == before.keys()
    swap_class(
        attn, llava.PositionedAttention, _restore=RestoreState(None), _restore_layer=0
    )
    assert type(attn)._restore_base is cls
    unswap_class(attn, "_restore", "_restore_layer")
    assert type(attn) is cls and not hasattr(attn, "_restore")


def test_llava_rope_settings_come_from_the_model():
    model, _ = tiny_llava(rope_scaling={"type": "linear", "factor": 2.0})
    freqs = llava.rope_frequencies(model)
    assert freqs.axes is None
    assert mx.allclose(freqs.thetas, cal.rope_thetas(16, 10000.0, scale=0.5)).item()
