"""The eval harness's variants switch on exactly the parts of RESTORE they name."""

import mlx.core as mx
import pytest
from conftest import BUILDERS

import restore_mlx.integration as ri
from restore_mlx.config import RestoreConfig
from restore_mlx.presets import VARIANTS

PARTS = ("anchors", "positions", "size_bias", "distance_bias")
# Which parts each variant claims to run.
CLAIMS = {
    "base": set(),
    "restore": set(PARTS),
    "positions": {"positions"},
    "calibration": {"size_bias", "distance_bias"},
    "anchors": {"anchors"},
    "flat-distance": set(PARTS),  # and the distance on the flattened index
}


def parts_on(config: RestoreConfig) -> set:
    return {p for p in PARTS if config.restore and getattr(config, p)}


def test_every_variant_is_claimed():
    assert set(VARIANTS) == set(CLAIMS)


@pytest.mark.parametrize("variant", sorted(CLAIMS))
def test_variant_switches(variant):
    config = RestoreConfig(**VARIANTS[variant])
    assert parts_on(config) == CLAIMS[variant]
    want = "flat" if variant == "flat-distance" else "per_axis"
    assert config.distance_positions == want


@pytest.mark.parametrize("variant", sorted(CLAIMS))
def test_variant_behaviour(variant):
    # What the prepared prompt holds shows which parts really ran.
    model, sample = BUILDERS["llava"]()
    ri.apply(
        model, config=RestoreConfig(method="divprune", keep=0.5, **VARIANTS[variant])
    )
    prepared = ri.prepare_tokens(model, sample)
    prompt, red = prepared.prompt, prepared.reduction
    kept = red.positions[0].tolist()
    ran = set()
    if mx.any(red.merged).item():
        ran.add("anchors")
    if prompt.rope is not None and prompt.rope[5:13].tolist() == [5 + k for k in kept]:
        ran.add("positions")
    calibration = prompt.calibration
    if calibration is not None and calibration.sizes is not None:
        ran.add("size_bias")
    if calibration is not None:
        # The distance bias is what makes the mask vary along a row of text keys.
        row = calibration.prefill(0, prompt.length)[0][1][-1, :5]
        if not mx.all(row == row[0]).item():
            ran.add("distance_bias")
    assert ran == CLAIMS[variant]
