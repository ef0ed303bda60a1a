"""End to end with real (tiny, offline) processors: prepare_inputs, then mlx-vlm's own
stream_generate on the prepared inputs."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import restore_mlx.integration as ri  # noqa: E402
from restore_mlx.bench.checkpoints import write_checkpoint, write_image  # noqa: E402


@pytest.fixture(scope="module", params=["llava", "qwen2_vl"])
def loaded(request, tmp_path_factory):
    from restore_mlx.adapters.processors import load

    root = tmp_path_factory.mktemp(request.param)
    path = write_checkpoint(request.param, root / "hf")
    image = write_image(root / "i.png", 56 if request.param != "llava" else 32)
    model, processor = load(str(path))
    return model, processor, str(image)


def _prompt(model, processor):
    from mlx_vlm.prompt_utils import apply_chat_template

    return apply_chat_template(processor, model.config, "what color ?", num_images=1)


def _stream(model, processor, prompt, image, **kwargs):
    from mlx_vlm import stream_generate

    out = list(stream_generate(model, processor, prompt, [image], max_tokens=4,
                               temperature=0.0, **kwargs))  # fmt: skip
    return [r.token for r in out], out[-1].prompt_tokens


def test_stream_generate_runs_the_reduced_prompt(loaded):
    model, processor, image = loaded
    prompt = _prompt(model, processor)
    plain_tokens, plain_len = _stream(model, processor, prompt, image)
    try:
        ri.apply(model, "mobile-50")
        prepared = ri.prepare_inputs(model, processor, prompt, [image])
        n = prepared.visual_tokens_before
        assert prepared.visual_tokens_after == round(n / 2)
        assert prepared.prompt_tokens == plain_len - n + prepared.visual_tokens_after
        assert prepared.vision_s > 0 and prepared.reduce_s > 0
        _, reduced_len = _stream(
            model, processor, prompt, image,
            input_ids=prepared.input_ids, **prepared.generate_kwargs,
        )  # fmt: skip
        assert reduced_len == prepared.prompt_tokens
        # Reduction off: the same tokens as plain mlx-vlm, through the same entry point.
        ri.apply(model, keep=1.0, restore=False)
        prepared = ri.prepare_inputs(model, processor, prompt, image)
        assert prepared.reduction is None
        tokens, _ = _stream(
            model, processor, prompt, image,
            input_ids=prepared.input_ids, **prepared.generate_kwargs,
        )  # fmt: skip
        assert tokens == plain_tokens
    finally:
        ri.remove(model)
