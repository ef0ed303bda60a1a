"""Calibration builders: size bias, RoPE decay (1D and M-RoPE), masks, decode bias."""

import math

import mlx.core as mx
import numpy as np
import pytest

from restore_mlx.core import calibration as cal


def test_decay_is_one_at_zero_and_bias_zero_there():
    thetas = cal.rope_thetas(64, 10000.0)
    table = cal.decay_table(thetas, 50)
    assert table[0].item() == 1.0
    pos = mx.arange(10)
    bias = cal.distance_bias(pos, pos, table)
    assert mx.array_equal(mx.diag(bias), mx.zeros((10,)))
    # Far away the bias approaches log 2 and never exceeds log 3.
    assert 0 < bias[9, 0].item() < math.log(3)


def test_size_bias_zero_for_unit_sizes():
    assert mx.array_equal(cal.log_sizes(mx.ones((7,), dtype=mx.int32)), mx.zeros((7,)))
    with pytest.raises(ValueError, match="sizes"):
        cal.log_sizes(mx.array([1, 0]))


def test_size_bias_is_proportional_attention():
    # softmax over [text..., merged key of size s] with log s on that key equals the
    # softmax over the same keys with the merged key copied s times (total share).
    mx.random.seed(0)
    q = mx.random.normal((8,))
    k = mx.random.normal((5, 8))
    s = 4
    logits = k @ q
    biased = logits + cal.log_sizes(mx.array([1, 1, 1, 1, s]))
    p_biased = mx.softmax(biased)
    copies = mx.concatenate([logits[:4], mx.repeat(logits[4:], s)])
    p_copies = mx.softmax(copies)
    assert mx.allclose(p_biased[:4], p_copies[:4], atol=1e-6)
    assert mx.allclose(p_biased[4], p_copies[4:].sum(), atol=1e-6)


def test_rope_thetas_options():
    full = cal.rope_thetas(64, 10000.0)
    assert full.shape == (32,) and full.dtype == mx.float32 and full[0].item() == 1.0
    partial = cal.rope_thetas(64, 10000.0, rotary_dim=32)
    assert partial.shape == (16,)
    scaled = cal.rope_thetas(64, 10000.0, scale=0.5)
    assert mx.allclose(scaled, full * 0.5)
    with pytest.raises(ValueError, match="rotary_dim"):
        cal.rope_thetas(64, 10000.0, rotary_dim=65)


def test_mrope_form_equals_1d_when_axes_agree():
    thetas = cal.rope_thetas(32, 10000.0)
    section = [4, 6, 6]
    tables = cal.mrope_decay_tables(thetas, cal.mrope_axes(section, 16), 40)
    table = cal.decay_table(thetas, 40)
    assert mx.allclose(tables.sum(axis=0), table, atol=1e-6)
    pos1 = mx.array([0, 3, 7, 20, 40])
    pos3 = mx.stack([pos1, pos1, pos1])
    assert mx.allclose(
        cal.distance_bias(pos3, pos3, tables),
        cal.distance_bias(pos1, pos1, table),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="mrope_section"):
        cal.mrope_axes([4, 4, 4], 16)
    with pytest.raises(ValueError, match="axes"):
        cal.mrope_decay_tables(thetas, [0, 1, 2], 5)


def test_mrope_axes_use_their_own_frequencies():
    thetas = cal.rope_thetas(32, 10000.0)
    tables = cal.mrope_decay_tables(thetas, cal.mrope_axes([4, 6, 6], 16), 10)
    # Moving only along w changes only the w table's term.
    pq = mx.array([[0], [0], [5]])
    pk = mx.array([[0], [0], [0]])
    c = cal.decay(pq, pk, tables)[0, 0]
    expect = tables[0, 0] + tables[1, 0] + tables[2, 5]
    assert mx.allclose(c, expect)


def test_prefill_mask_keeps_causality():
    sizes = cal.log_sizes(mx.array([1, 2, 3, 1]))
    table = cal.decay_table(cal.rope_thetas(16, 10000.0), 10)
    pos = mx.array([0, 2, 5, 9])
    mask = cal.prefill_mask(sizes, cal.distance_bias(pos, pos, table), dtype=mx.float16)
    assert mask.dtype == mx.float16
    upper = mx.triu(mx.ones((4, 4)), k=1).astype(mx.bool_)
    assert mx.all(mx.where(upper, mask == -mx.inf, True)).item()
    assert mx.all(mx.where(upper, True, mx.isfinite(mask))).item()
    # Diagonal: distance 0, so only the size bias.
    assert mx.allclose(mx.diag(mask).astype(mx.float32), sizes, atol=1e-3)


def test_key_sizes_uniform_first_layer():
    sizes = mx.array([1, 3, 4], dtype=mx.int32)
    slots = mx.array([2, 3, 4])
    true = cal.key_sizes(6, slots, sizes)
    assert true.tolist() == [1, 1, 1, 3, 4, 1]
    uniform = cal.key_sizes(6, slots, sizes, uniform=True)
    assert mx.allclose(uniform, mx.array([1, 1, 8 / 3, 8 / 3, 8 / 3, 1]))


def test_decode_bias_and_shift():
    bias = cal.decode_bias(mx.array([0.0, 0.5, 0.25]), 5)
    assert bias.tolist() == [0.0, 0.5, 0.25, 0.0, 0.0]
    assert cal.decode_shift(576, 64) == 512
    with pytest.raises(ValueError):
        cal.decode_shift(10, 11)
    with pytest.raises(ValueError):
        cal.decode_bias(mx.zeros((4,)), 3)


# Against numpy and mlx-vlm's own rotary modules, not against the functions under test.


def _np_thetas(dims, base, scale=1.0):
    return scale * base ** (-np.arange(0, dims, 2) / dims)


@pytest.mark.parametrize("dims,base,scale", [(64, 10000.0, 1.0), (16, 1e6, 0.25)])
def test_rope_thetas_equal_numpy(dims, base, scale):
    got = np.array(cal.rope_thetas(dims, base, scale=scale))
    np.testing.assert_allclose(got, _np_thetas(dims, base, scale), rtol=1e-6)
    partial = np.array(cal.rope_thetas(64, base, rotary_dim=dims))
    np.testing.assert_allclose(partial, _np_thetas(dims, base), rtol=1e-6)


def test_decay_table_equals_numpy():
    thetas = _np_thetas(32, 10000.0)
    d = np.arange(300)
    want = np.cos(d[:, None] * thetas[None, :]).mean(axis=1)
    got = np.array(cal.decay_table(mx.array(thetas.astype(np.float32)), 299))
    np.testing.assert_allclose(got, want, atol=2e-6)


MROPE_ARCHS = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_5"]


@pytest.mark.parametrize("scaling", [None, {"type": "linear", "factor": 2.0}])
def test_llava_decay_is_the_rotation_nn_rope_applies(scaling):
    from conftest import tiny_llava
    from reference import _llava_angles, rope_decay

    from restore_mlx.adapters import llava

    model, _ = tiny_llava(rope_scaling=scaling)
    positions = np.array([0, 1, 5, 17, 40, 41, 90])
    cos, sin = _llava_angles(model, positions, 0)
    want = np.log(2.0 - rope_decay(cos, sin, np.arange(7), np.arange(7)))
    freqs = llava.rope_frequencies(model)
    assert freqs.axes is None
    pos = mx.array(positions)
    got = cal.distance_bias(pos, pos, cal.table_for(freqs.thetas, pos))
    np.testing.assert_allclose(np.array(got), want, atol=2e-6)


@pytest.mark.parametrize("arch", MROPE_ARCHS)
def test_mrope_decay_is_the_rotation_the_model_applies(arch):
    # Each frequency's axis as mlx-vlm's rotary module assigns it (chunked sections on
    # Qwen2-VL, interleaved on Qwen3-VL/3.5, over the rotated frequencies only with
    # partial rotary): positions that move along one axis at a time separate the
    # axes, so a wrong assignment fails.
    from conftest import BUILDERS
    from reference import REFERENCE, rope_decay

    from restore_mlx.adapters import adapter_for

    model, _ = BUILDERS[arch]()
    rng = np.random.default_rng(0)
    positions = rng.integers(0, 60, size=(3, 9))
    positions[:, 1:4] = positions[:, :1]  # same (t, h, w) as token 0 ...
    positions[0, 1] += 7  # ... but for t
    positions[1, 2] += 7  # ... or h
    positions[2, 3] += 7  # ... or w
    cos, sin = REFERENCE[arch].angles(model, positions, 0)
    want = rope_decay(cos, sin, np.arange(9), np.arange(9))
    freqs = adapter_for(model).rope_frequencies(model)
    pos = mx.array(positions.astype(np.int32))
    tables = cal.table_for(freqs.thetas, pos, freqs.axes)
    np.testing.assert_allclose(np.array(cal.decay(pos, pos, tables)), want, atol=2e-6)


def test_prefill_mask_values_equal_numpy():
    sizes = np.array([1, 1, 3, 7, 2, 1])
    positions = np.array([0, 1, 4, 9, 13, 20])
    thetas = _np_thetas(16, 10000.0)
    d = np.abs(positions[:, None] - positions[None, :])
    c = np.cos(d[..., None] * thetas).mean(axis=-1)
    want = np.log(sizes)[None, :] + np.log(2 - c)
    want = np.where(np.tril(np.ones((6, 6), dtype=bool)), want, -np.inf)
    pos = mx.array(positions)
    table = cal.decay_table(mx.array(thetas.astype(np.float32)), 20)
    got = cal.prefill_mask(
        cal.log_sizes(mx.array(sizes)), cal.distance_bias(pos, pos, table)
    )
    np.testing.assert_allclose(np.array(got), want, atol=2e-6)


def test_uniform_sizes_and_decode_bias_equal_numpy():
    sizes = np.array([2, 5, 1])
    slots = np.array([1, 2, 3])
    uniform = np.array(cal.key_sizes(6, mx.array(slots), mx.array(sizes), uniform=True))
    np.testing.assert_allclose(uniform, [1, 8 / 3, 8 / 3, 8 / 3, 1, 1], rtol=1e-6)
    true = cal.log_sizes(cal.key_sizes(6, mx.array(slots), mx.array(sizes)))
    got = np.array(cal.decode_bias(true, 9))
    want = np.concatenate([np.log([1, 2, 5, 1, 1, 1]), np.zeros(3)])
    np.testing.assert_allclose(got, want, atol=1e-7)
