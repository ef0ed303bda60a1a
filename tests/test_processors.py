"""The llava processor workaround: mlx-vlm 0.7.10 + transformers 5 fail without it."""

import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.adapters.processors import fix_processor, load, needs_fix  # noqa: E402
from restore_mlx.bench.checkpoints import write_checkpoint, write_image  # noqa: E402


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    return write_checkpoint("llava", root / "hf"), write_image(root / "i.png", 32)


def _prompt(processor, model):
    from mlx_vlm.prompt_utils import apply_chat_template

    return apply_chat_template(processor, model.config, "what color ?", num_images=1)


def test_plain_mlx_vlm_fails_and_fixed_processor_generates(llava):
    from mlx_vlm import generate
    from mlx_vlm.utils import load as vlm_load

    path, image = llava
    model, processor = vlm_load(str(path))
    assert needs_fix(processor)
    with pytest.raises(ValueError, match="padding"):
        generate(
            model, processor, _prompt(processor, model), [str(image)], max_tokens=2
        )
    fix_processor(processor)
    result = generate(
        model, processor, _prompt(processor, model), [str(image)], max_tokens=2
    )
    assert result.generation_tokens == 2
    # 8x8 patches (CLS dropped) expanded in the prompt: the image really went in.
    assert result.prompt_tokens > 64


def test_fix_is_per_instance_idempotent_and_saves_same_config(llava, tmp_path):
    from mlx_vlm.utils import load as vlm_load

    path, _ = llava
    _, fixed = load(path)
    kind = type(fixed.image_processor)
    assert not needs_fix(fixed)
    assert type(fix_processor(fixed).image_processor) is kind
    _, other = vlm_load(str(path))  # nothing patched globally
    assert needs_fix(other)
    assert type(other.image_processor).__name__ == kind.__name__
    # (the whole processor cannot be saved after mlx_vlm.load: its detokenizer does
    # not deepcopy; the image processor is what the class swap could change)
    fixed.image_processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "CLIPImageProcessor"


def test_other_processors_untouched(tmp_path):
    path = write_checkpoint("qwen2_vl", tmp_path / "q")
    _, processor = load(path)
    assert not needs_fix(processor)
    assert not getattr(processor.image_processor, "_restore_mlx_fixed", False)
