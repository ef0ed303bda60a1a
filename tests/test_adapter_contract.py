"""Every registered adapter fulfils the adapter contract, and the shared tests cover it."""

import inspect

import mlx.core as mx
import pytest
from conftest import BUILDERS
from reference import REFERENCE

import restore_mlx.integration as ri
from restore_mlx.adapters import ADAPTERS, FAMILIES, SUPPORTED, adapter_for
from restore_mlx.adapters.contract import (
    Adapter,
    ImageSpan,
    LayoutRequest,
    ReducedLayout,
    VisionOutput,
)

MEMBERS = [
    name
    for name, value in vars(Adapter).items()
    if inspect.isfunction(value) and not name.startswith("_")
]


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.__name__.rsplit(".")[-1])
def test_family_fulfils_the_contract(family):
    assert isinstance(family, Adapter)
    assert family.NAMES and all(ADAPTERS[name] is family for name in family.NAMES)
    for name in MEMBERS:
        want = list(inspect.signature(getattr(Adapter, name)).parameters)[1:]
        params = inspect.signature(getattr(family, name)).parameters.values()
        got = [p.name for p in params]
        extra = [p for p in params if p.name not in want]
        assert got[: len(want)] == want, f"{family.__name__}.{name}{tuple(got)}"
        assert all(p.default is not p.empty for p in extra), f"{family.__name__}.{name}"


def test_every_architecture_goes_through_the_shared_tests():
    # A tiny model and an independent calibration reference for each supported type.
    types = {build()[0].config.model_type for build in BUILDERS.values()}
    assert types == set(SUPPORTED)
    assert set(REFERENCE) == set(SUPPORTED)


def test_adapter_outputs_have_the_contract_types(arch):
    model, sample = BUILDERS[arch]()
    adapter = adapter_for(model)
    spans = adapter.image_spans(model, sample["input_ids"])
    assert spans and all(isinstance(s, ImageSpan) for s in spans)
    n = sum(s.length for s in spans)
    out = adapter.encode(model, sample["pixel_values"], sample)
    assert isinstance(out, VisionOutput) and out.features.shape[1] == n
    kept = mx.array([0, 5, 9])
    request = LayoutRequest(sample, out.features[:, :3], kept, spans, True)
    lay = adapter.layout(model, request)
    assert isinstance(lay, ReducedLayout)
    T = sample["input_ids"].shape[1]
    assert lay.input_ids.shape == (1, T - n + 3)
    assert lay.bias_positions.shape[-1] == lay.input_ids.shape[1]
