"""InternVL end to end, in both hub layouts (OpenGVLab/InternVL3-1B's ``internvl_chat``
and InternVL3-1B-hf's ``internvl``): a tiny HF-layout checkpoint -> ``restore-mlx-convert``
4-bit -> ``python -m restore_mlx.generate`` on a real image file in a subprocess, and
every preset's token count. A 128 px picture with 64 px tiles is cut into 2 x 2 tiles
plus the thumbnail: 5 runs of 4 x 4 = 16 tokens, 80 visual tokens in one image run."""

import json

import pytest
from test_cli import _python, assert_presets_keep, convert_4bit

from restore_mlx.bench.checkpoints import write_image

VISUAL = 80
# Budgets of the whole image, split over its five tiles in proportion.
PRESET_TOKENS = {"mobile-25": 60, "mobile-50": 40, "server-70": 24, "extreme-89": 9}


@pytest.fixture(scope="module", params=["internvl_chat", "internvl"])
def internvl(request, tmp_path_factory):
    """(layout, converted 4-bit model folder, image path)."""
    root = tmp_path_factory.mktemp(request.param)
    model = convert_4bit(request.param, root)
    return request.param, model, write_image(root / "picture.png", 128)


def test_end_to_end_subprocess_generates_from_the_reduced_prompt(internvl, tmp_path):
    layout, model, image = internvl
    assert json.loads((model / "config.json").read_text())["model_type"] == layout
    stats_file = tmp_path / "stats.json"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(model), "--image", str(image),
        "--prompt", "what color is the square ?", "--max-tokens", "3",
        "--stats-json", str(stats_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Visual tokens: {VISUAL} -> 40" in done.stdout
    stats = json.loads(stats_file.read_text())
    assert stats["preset"] == "mobile-50" and stats["generation_tokens"] == 3
    assert stats["visual_tokens_per_image"] == [[VISUAL, 40]]


def test_every_preset_keeps_its_token_count(internvl, tmp_path, capsys):
    _, model, image = internvl
    assert_presets_keep(model, image, VISUAL, PRESET_TOKENS, tmp_path, capsys)
