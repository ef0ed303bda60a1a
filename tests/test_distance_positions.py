"""``distance_positions``: the M-RoPE distance bias per (t, h, w) axis or on the
flattened 1-D prompt index.

The bias rows are recomputed here from the formula (``log(2 - c)``, ``c`` the mean
RoPE cosine), not through the library's table helpers, and compared with what the
prepared prompt applies at every query and key of the prefill.
"""

import numpy as np
import pytest
from conftest import BUILDERS

import restore_mlx.integration as ri
from restore_mlx.config import RestoreConfig

DISTANCE_ONLY = dict(anchors=False, size_bias=False)


def _prepared(name, keep=0.5, **switches):
    model, sample = BUILDERS[name]()
    cfg = RestoreConfig(method="divprune", keep=keep, **DISTANCE_ONLY, **switches)
    ri.apply(model, config=cfg)
    return model, ri.prepare_tokens(model, sample), sample


def _thetas(model):
    rotary = model.language_model.model.layers[0].self_attn.rotary_emb
    return np.asarray(rotary.inv_freq, dtype=np.float64), list(rotary.mrope_section)


def _bias_rows(prompt) -> np.ndarray:
    """The distance bias the prefill applies, causal part removed: [P, P]."""
    rows = np.asarray(prompt.calibration.prefill(0, prompt.length)[0][1])  # kind 0
    lower = np.tril(np.ones_like(rows, dtype=bool))
    return np.where(lower, rows, 0.0)


def _expected_flat(thetas, flat):
    d = np.abs(flat[:, None] - flat[None, :]).astype(np.float64)
    c = np.cos(d[..., None] * thetas).mean(-1)
    return np.tril(np.log(2 - c))


def _expected_per_axis(thetas, section, triples):
    axes = np.repeat(np.arange(3), section)  # Qwen2-VL's chunked sections
    d = np.abs(triples[:, :, None] - triples[:, None, :]).astype(np.float64)
    c = np.cos(d[axes] * thetas[:, None, None]).mean(0)
    return np.tril(np.log(2 - c))


def test_flat_uses_the_1d_decay_of_the_flattened_index():
    model, prepared, sample = _prepared("qwen2_vl", distance_positions="flat")
    prompt = prepared.prompt
    assert prompt.calibration.positions.ndim == 1
    # The flattened index of every kept token: its column in the unreduced prompt.
    kept = np.asarray(prompt.calibration.positions)
    ids = np.asarray(sample["input_ids"][0])
    assert np.array_equal(ids[kept], np.asarray(prompt.ids[0]))
    assert kept[-1] == ids.shape[0] - 1 and np.all(np.diff(kept) > 0)
    thetas, _ = _thetas(model)
    np.testing.assert_allclose(
        _bias_rows(prompt), _expected_flat(thetas, kept), atol=2e-5
    )


def test_per_axis_uses_the_thw_form():
    model, prepared, _ = _prepared("qwen2_vl")  # per_axis is the default
    prompt = prepared.prompt
    triples = np.asarray(prepared.generate_kwargs["position_ids"][:, 0])
    assert np.array_equal(np.asarray(prompt.calibration.positions), triples)
    thetas, section = _thetas(model)
    want = _expected_per_axis(thetas, section, triples)
    np.testing.assert_allclose(_bias_rows(prompt), want, atol=2e-5)
    # The two forms differ on an image prompt (h, w differ from the flat index).
    flat = _prepared("qwen2_vl", distance_positions="flat")[1].prompt
    assert not np.allclose(_bias_rows(flat), _bias_rows(prompt), atol=1e-3)


def test_flat_without_original_positions_uses_the_reduced_index():
    model, prepared, _ = _prepared(
        "qwen2_vl", distance_positions="flat", positions=False
    )
    positions = np.asarray(prepared.prompt.calibration.positions)
    assert np.array_equal(positions, np.arange(prepared.prompt.length))


def test_flat_changes_nothing_on_1d_rope():
    _, per_axis, _ = _prepared("llava")
    _, flat, _ = _prepared("llava", distance_positions="flat")
    assert np.array_equal(_bias_rows(per_axis.prompt), _bias_rows(flat.prompt))


def test_unknown_distance_positions_is_refused():
    with pytest.raises(ValueError, match="per_axis"):
        RestoreConfig(distance_positions="diagonal")
