"""gemma3 end to end: a tiny HF-layout checkpoint (hub names, Gemma3Processor, special
image tokens, chat template) -> ``restore-mlx-convert`` 4-bit -> ``python -m
restore_mlx.generate`` on a real image file, and every preset's token count."""

import json

import pytest
from test_cli import _python, assert_presets_keep, cli_stats, convert_4bit

from restore_mlx.bench.checkpoints import write_image

# 32 px, 4 px patches: 64 patches pooled 2 x 2 into 16 image tokens, as the real
# model pools 4096 patches into 256; an 8-token window wraps in every run.
PRESET_TOKENS = {"mobile-25": 12, "mobile-50": 8, "server-70": 5, "extreme-89": 2}


@pytest.fixture(scope="module")
def gemma3(tmp_path_factory):
    """(converted 4-bit model folder, image path)."""
    root = tmp_path_factory.mktemp("gemma3")
    return convert_4bit("gemma3", root), write_image(root / "picture.png", 32)


def test_end_to_end_subprocess_generates_from_the_reduced_prompt(gemma3, tmp_path):
    model, image = gemma3
    stats_file, overlay = tmp_path / "stats.json", tmp_path / "overlay.png"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(model), "--image", str(image),
        "--prompt", "what color is the square ?", "--max-tokens", "12",
        "--stats-json", str(stats_file), "--overlay", str(overlay),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Visual tokens: 16 -> 8" in done.stdout
    stats = json.loads(stats_file.read_text())
    assert stats["preset"] == "mobile-50" and stats["generation_tokens"] > 0
    assert overlay.stat().st_size > 0


def test_every_preset_keeps_its_token_count(gemma3, tmp_path, capsys):
    model, image = gemma3
    assert_presets_keep(model, image, 16, PRESET_TOKENS, tmp_path, capsys)


@pytest.mark.parametrize("method", ["visionzip", "fastv"])
def test_cls_and_in_llm_methods_run_from_the_cli(gemma3, tmp_path, capsys, method):
    model, image = gemma3
    stats = cli_stats(model, image, tmp_path, capsys, "--method", method, "--tokens", 4)
    assert stats["visual_tokens_after"] == 4 and stats["method"] == method
