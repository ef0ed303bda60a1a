"""InternVL in the Hugging Face layout (mlx-vlm's ``internvl``): what the shared tests
cannot see. mlx-vlm's own merge for this type ignores ``cached_image_features``, so the
shared test that hands an encoding to unpatched mlx-vlm skips it; what holds instead is
that the patched model takes it and, with reduction off, equals unpatched mlx-vlm."""

import mlx.core as mx
import pytest
from conftest import BUILDERS
from test_encoded_image import _generate, _no_tower, _same

import restore_mlx.integration as ri
from restore_mlx.adapters import internvl_hf
from restore_mlx.errors import UnsupportedArchitecture


def test_patched_model_takes_the_encoding_and_equals_unpatched_mlx_vlm(monkeypatch):
    model, sample = BUILDERS["internvl"]()
    ids, pixels = sample["input_ids"], sample["pixel_values"]
    want = _generate(model, ids, pixels, {})  # unpatched, the tower on the pixels
    ri.apply(model, keep=1.0)
    encoded = ri.encode_image(model, sample)
    _no_tower(monkeypatch, model)
    cached = ri.cached_image_kwargs(model, encoded)
    assert _same(_generate(model, ids, pixels, cached), want)


def test_patched_merge_refuses_features_that_do_not_fit():
    model, sample = BUILDERS["internvl"]()
    ri.apply(model, keep=1.0)
    encoded = ri.encode_image(model, sample)
    with pytest.raises(ValueError, match="47 cached image features for 48"):
        model.get_input_embeddings(
            sample["input_ids"],
            sample["pixel_values"],
            cached_image_features=encoded.features[:, 1:],
        )
    ri.remove(model)  # the stock merge back: it runs the tower, cached or not
    stock = model.get_input_embeddings(
        sample["input_ids"], sample["pixel_values"], cached_image_features=mx.zeros(1)
    )
    assert stock.inputs_embeds.shape == (1, sample["input_ids"].shape[1], 64)


def test_scaled_rope_other_than_linear_is_refused():
    from mlx_vlm.models.rope_utils import initialize_rope

    model, _ = BUILDERS["internvl"]()
    attn = model.language_model.model.layers[0].self_attn
    attn.rope = initialize_rope(
        16, 10000.0, False, {"rope_type": "llama3", "factor": 8.0,
                             "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                             "original_max_position_embeddings": 8192},
    )  # fmt: skip
    with pytest.raises(UnsupportedArchitecture, match="rope_type 'linear'"):
        internvl_hf.rope_frequencies(model)


@pytest.mark.parametrize("side, tiles", [(448, 1), (896, 5)])
def test_bench_request_is_tiled_as_the_processor_tiles_it(side, tiles):
    from restore_mlx.bench.configs import get_config
    from restore_mlx.bench.subject import synthetic_sample

    config, _, _ = get_config("internvl3-1b")
    sample, n = synthetic_sample(config, side)
    assert n == 256 * tiles and sample["pixel_values"].shape == (tiles, 3, 448, 448)
    ids = sample["input_ids"][0].tolist()
    start = ids.index(151667)
    assert ids[start - 1] == 151665 and ids[start + n] == 151666  # <img> ... </img>
    assert ids.count(151667) == n
