"""One pass of the vision tower reused by later requests (``encode_image``,
``encoded=``, ``cached_image_kwargs``), and ``is_applied``."""

import mlx.core as mx
import pytest
from conftest import BUILDERS
from mlx_vlm.generate import generate_step

import restore_mlx
import restore_mlx.integration as ri
from restore_mlx.generation import _reduces

RECIPES = {
    "restore": dict(preset="server-70"),
    "unreduced": dict(keep=1.0),
    "grid": dict(method="pool", keep=0.25),
    "in-llm": dict(method="fastv", keep=0.5),
}


def _no_tower(monkeypatch, model):
    """From here on, running the vision tower fails the test."""

    def boom(*args, **kwargs):
        raise AssertionError("the vision tower ran")

    # The tower's attribute name differs (idefics3: vision_model).
    tower = model["vision_tower"] if "vision_tower" in model else model.vision_model
    monkeypatch.setattr(type(tower), "__call__", boom)


def _generate(model, ids, pixels, kwargs, steps=3):
    kwargs = dict(kwargs)
    mask = kwargs.pop("mask", None)  # the attention mask generate_step takes
    out = [lp for _, lp in generate_step(
        ids, model, pixels, mask, max_tokens=steps, temperature=0.0, **kwargs
    )]  # fmt: skip
    mx.eval(out)
    return out


def _outputs(model, prepared):
    """Everything a request hands to mlx-vlm, and what the model makes of it."""
    kwargs = dict(prepared.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    red = prepared.reduction
    return dict(
        ids=prepared.input_ids,
        features=red.features if red else kwargs["cached_image_features"],
        positions=red.positions if red else mx.array([]),
        rope=getattr(prepared.prompt, "rope", None),
        position_ids=kwargs.get("position_ids"),
        prefill_logits=ri.inspect_prefill(model, prepared).logits,
        logprobs=_generate(model, prepared.input_ids, pixels, kwargs),
    )


def _same(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a.shape == b.shape and mx.array_equal(a, b).item()


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_reused_encoding_is_bit_identical_and_skips_the_tower(
    arch, recipe, monkeypatch
):
    model, sample = BUILDERS[arch]()
    ri.apply(model, **RECIPES[recipe])
    fresh = ri.prepare_tokens(model, sample)
    assert fresh.vision_s > 0.0
    want = _outputs(model, fresh)
    encoded = ri.encode_image(model, sample)
    _no_tower(monkeypatch, model)
    reused = ri.prepare_tokens(model, sample, encoded=encoded)
    assert reused.vision_s == 0.0  # this call did not run the tower
    got = _outputs(model, reused)
    for key in want:
        assert _same(got[key], want[key]), key


def test_reused_cls_attention_is_bit_identical(monkeypatch):
    model, sample = BUILDERS["llava"]()
    ri.apply(model, method="vispruner", keep=0.5)
    want = _outputs(model, ri.prepare_tokens(model, sample))
    encoded = ri.encode_image(model, sample)
    assert encoded.cls is not None and encoded.cls_for == "vispruner"
    _no_tower(monkeypatch, model)
    got = _outputs(model, ri.prepare_tokens(model, sample, encoded=encoded))
    for key in want:
        assert _same(got[key], want[key]), key


# mlx-vlm merges that ignore ``cached_image_features``: only the patched model takes an
# encoding (tests/test_internvl.py: with reduction off it equals unpatched mlx-vlm).
IGNORES_CACHED = {
    "internvl": "mlx-vlm 0.7.10's internvl get_input_embeddings always runs the tower"
}


def test_unpatched_mlx_vlm_takes_the_encoding_and_skips_the_tower(arch, monkeypatch):
    if arch in IGNORES_CACHED:
        pytest.skip(IGNORES_CACHED[arch])
    model, sample = BUILDERS[arch]()
    ids, pixels = sample["input_ids"], sample["pixel_values"]
    extra = {k: v for k, v in sample.items() if k not in ("input_ids", "pixel_values")}
    want = _generate(model, ids, pixels, extra)
    encoded = ri.encode_image(model, sample)  # no recipe applied: the default's
    assert not ri.is_applied(model) and encoded.cls is None
    _no_tower(monkeypatch, model)
    cached = ri.cached_image_kwargs(model, encoded)
    assert _same(_generate(model, ids, pixels, {**extra, **cached}), want)


def test_an_encoding_that_does_not_fit_raises(arch):
    model, sample = BUILDERS[arch]()
    ri.apply(model, keep=0.5)
    encoded = ri.encode_image(model, sample)
    # Fewer image tokens in the prompt than the encoding has (five dropped).
    ids = sample["input_ids"].tolist()[0]
    shorter = {**sample, "input_ids": mx.array([ids[:-12] + ids[-7:]])}
    with pytest.raises(ValueError, match=f"prompt but {encoded.tokens} encoded"):
        ri.prepare_tokens(model, shorter, encoded=encoded)
    narrow = ri.EncodedImage(encoded.features[..., :32], encoded.grid, None, 0.0)
    with pytest.raises(ValueError, match="another model"):
        ri.prepare_tokens(model, sample, encoded=narrow)
    text_only = {"input_ids": mx.array([[5, 6, 7]])}
    with pytest.raises(ValueError, match="no image"):
        ri.prepare_tokens(model, text_only, encoded=encoded)
    with pytest.raises(ValueError, match="no pixel_values"):
        ri.encode_image(model, text_only)


def test_an_encoding_without_the_cls_attention_the_method_reads_raises():
    model, sample = BUILDERS["llava"]()
    ri.apply(model, method="divprune")
    encoded = ri.encode_image(model, sample)
    assert encoded.cls is None
    ri.apply(model, method="vispruner", keep=0.5)
    with pytest.raises(ValueError, match="vispruner.*CLS.*encode_image"):
        ri.prepare_tokens(model, sample, encoded=encoded)
    # A per-request recipe picks what the encoding must cover.
    vis = ri.encode_image(model, sample)
    other = restore_mlx.RestoreConfig(method="divprune", keep=0.5)
    assert ri.encode_image(model, sample, config=other).cls is None
    assert ri.prepare_tokens(model, sample, encoded=vis).visual_tokens_after == 8


def test_is_applied_follows_apply_and_remove():
    model, _ = BUILDERS["llava"]()
    assert restore_mlx.is_applied is ri.is_applied
    assert not ri.is_applied(model) and not _reduces(model, ["image.png"])
    ri.apply(model, "mobile-50")
    assert ri.is_applied(model) and _reduces(model, ["image.png"])
    assert not _reduces(model, [])  # nothing to reduce without an image
    ri.remove(model)
    assert not ri.is_applied(model) and not _reduces(model, ["image.png"])
