"""Tiny offline checkpoints load with mlx-vlm and generate from an image prompt."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.bench.checkpoints import (  # noqa: E402
    ARCHS,
    write_checkpoint,
    write_image,
)


@pytest.mark.parametrize("arch", ARCHS)
def test_checkpoint_loads_and_generates_from_image(arch, tmp_path):
    from mlx_vlm import generate
    from mlx_vlm.prompt_utils import apply_chat_template
    from mlx_vlm.utils import get_model_type

    from restore_mlx.adapters.processors import load

    path = write_checkpoint(arch, tmp_path / "hf")
    config = json.loads((path / "config.json").read_text())
    # as mlx-vlm reads it (published LFM2-VL configs spell it "lfm2-vl")
    assert get_model_type(config) == arch
    image = write_image(tmp_path / "i.png", 56)
    model, processor = load(path)  # strict: every HF-named weight was sanitized
    prompt = apply_chat_template(processor, model.config, "what shape ?", num_images=1)
    text_only = len(processor.tokenizer(prompt)["input_ids"])
    result = generate(model, processor, prompt, [str(image)], max_tokens=3)
    assert result.generation_tokens == 3
    assert result.prompt_tokens > text_only  # the image expanded into visual tokens


def test_size_overrides_and_errors(tmp_path):
    path = write_checkpoint("llava", tmp_path / "a", hidden_size=64, num_layers=2)
    text = json.loads((path / "config.json").read_text())["text_config"]
    assert (text["hidden_size"], text["num_hidden_layers"]) == (64, 2)
    path = write_checkpoint(
        "qwen2_vl",
        tmp_path / "q",
        vocab_size=100,
        intermediate_size=80,
        dtype="bfloat16",
    )
    config = json.loads((path / "config.json").read_text())
    assert (config["vocab_size"], config["intermediate_size"]) == (100, 80)
    import mlx.core as mx

    weights = mx.load(str(path / "model.safetensors"))
    assert weights["lm_head.weight"].shape == (100, 32)
    assert weights["lm_head.weight"].dtype == mx.bfloat16
    with pytest.raises(ValueError, match="vocab_size"):
        write_checkpoint("llava", tmp_path / "d", vocab_size=3)
    with pytest.raises(ValueError, match="unknown architecture"):
        write_checkpoint("idefics3", tmp_path / "b")
    with pytest.raises(ValueError, match="size overrides"):
        write_checkpoint("llava", tmp_path / "c", width=3)
