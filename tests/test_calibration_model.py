"""The calibrated model against an independent reference, per architecture.

The reference (``reference.py``) runs the unpatched mlx-vlm layers on the reduced prompt
laid out at full length, with a bias computed in numpy from the formulas and the
model's own RoPE angles. Every prompt position and every decode step is compared.
"""

import mlx.core as mx
import numpy as np
import pytest
from conftest import BUILDERS
from mlx_vlm.models.cache import make_prompt_cache
from reference import (
    REFERENCE,
    full_length_embeddings,
    layer_masks,
    layout_of,
    reduced_embeddings,
    reduced_layout,
    reference_logits,
)

import restore_mlx.integration as ri
from restore_mlx.adapters import adapter_for

DECODE = [7, 11, 3]
# Same arithmetic in a different order (full-length softmax, float64 bias): a few ulps.
# Each calibration mutation moves the logits by far more (tests/mutations.py).
ATOL = 2e-5

RECIPES = {
    "pruning": dict(method="divprune", keep=0.5, anchors=False),
    "merging": dict(method="divprune", keep=0.25, anchors=True),
}


def patched_logits(model, prepared, tokens):
    """The patched model's logits at every reduced-prompt position, then per decode step."""
    lm = model.language_model
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values")
    emb = model.get_input_embeddings(prepared.input_ids, pixels, **kwargs)
    # As generate_step: caller kwargs, the helper's outputs, explicit positions winning.
    made = {k: v for k, v in emb.to_dict().items() if k != "inputs_embeds"}
    explicit = {k: kwargs[k] for k in ("position_ids", "rope_deltas") if k in kwargs}
    extra = {**kwargs, **{k: v for k, v in made.items() if v is not None}, **explicit}
    cache = make_prompt_cache(lm)
    out = [
        lm(prepared.input_ids, inputs_embeds=emb.inputs_embeds, cache=cache, **extra)
    ]
    for tok in tokens:
        out.append(lm(mx.array([[tok]]), cache=cache))
    return np.concatenate([np.array(o.logits[0]) for o in out])


def expected_logits(arch, ref_model, sample, prepared, tokens, **switches):
    spec = REFERENCE[ref_model.config.model_type]
    T = sample["input_ids"].shape[1]
    spans = adapter_for(ref_model).image_spans(ref_model, sample["input_ids"])
    lay = layout_of(prepared, spans, T)
    positions = spec.positions(ref_model, sample["input_ids"], sample, len(tokens))
    rows = np.concatenate([lay.slots, T + np.arange(len(tokens))])
    if spec.reduced:  # hybrid: the reduced prompt itself, at its original positions
        lay, positions = reduced_layout(lay), positions[..., rows]
        rows = np.arange(rows.shape[0])
        embeds = reduced_embeddings(ref_model, prepared, tokens)
    else:
        embeds = full_length_embeddings(ref_model, prepared, lay, tokens)
    masks = layer_masks(ref_model, lay, positions, len(tokens), **switches)
    additions = None
    if spec.additions is not None:
        additions = spec.additions(ref_model, sample, prepared, lay, len(tokens))
    logits = reference_logits(ref_model, embeds, masks, positions, rows, additions)
    return np.array(logits[0])[rows]


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_calibrated_model_equals_independent_reference(arch, recipe):
    model, sample = BUILDERS[arch]()
    ref_model, _ = BUILDERS[arch]()
    ri.apply(model, **RECIPES[recipe])
    prepared = ri.prepare_tokens(model, sample)
    merged = bool(mx.any(prepared.reduction.merged).item())
    assert merged == (recipe == "merging")
    got = patched_logits(model, prepared, DECODE)
    want = expected_logits(arch, ref_model, sample, prepared, DECODE)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "switches", [dict(size_bias=False), dict(distance_bias=False)], ids=str
)
def test_each_bias_alone_equals_the_reference(arch, switches):
    # One bias switched off: the reference without it, so neither hides the other.
    model, sample = BUILDERS[arch]()
    ref_model, _ = BUILDERS[arch]()
    ri.apply(model, **RECIPES["merging"], **switches)
    prepared = ri.prepare_tokens(model, sample)
    got = patched_logits(model, prepared, DECODE)
    flags = dict(size=switches.get("size_bias", True),
                 dist=switches.get("distance_bias", True))  # fmt: skip
    want = expected_logits(arch, ref_model, sample, prepared, DECODE, **flags)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL)


def test_reference_notices_a_wrong_bias(arch):
    # The reference is sharp: the uncalibrated model is far outside its tolerance.
    model, sample = BUILDERS[arch]()
    ref_model, _ = BUILDERS[arch]()
    ri.apply(model, **RECIPES["merging"], size_bias=False, distance_bias=False)
    prepared = ri.prepare_tokens(model, sample)
    got = patched_logits(model, prepared, DECODE)
    want = expected_logits(arch, ref_model, sample, prepared, DECODE)
    assert np.abs(got - want).max() > 100 * ATOL
