"""Tiled architectures end to end: a tiny HF-layout checkpoint (published config
structure, HF parameter names, real special tokens and chat template) converted to
4-bit by the runner script, then ``python -m restore_mlx.generate`` on a real image
file in a subprocess.

SmolVLM / LFM2-VL: a 64 px image is cut into 2 x 2 tiles of 32 px plus the global
image / thumbnail: 5 views of 4 x 4 tokens, 80 visual tokens, mobile-50 keeps 40.
LLaVA-OneVision: a 60 x 40 image picks 2 x 2 AnyRes crops of 32 px; their 8 x 8 grid
is unpadded to 6 x 8 with a newline after each row, after the 4 x 4 base image:
16 + 48 + 6 = 70 visual tokens; mobile-50 keeps half of the 64 reducible ones and
every newline, 32 + 6 = 38."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.bench.checkpoints import write_checkpoint, write_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
# arch -> ((width, height) of the image, prompt tokens of the unreduced request,
# visual tokens before -> after mobile-50)
CASES = {
    "smolvlm": ((64, 64), 103, (80, 40)),
    "lfm2_vl": ((64, 64), 99, (80, 40)),
    "llava_onevision": ((60, 40), 81, (70, 38)),
}


def _python(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True
    )


@pytest.mark.parametrize("arch", sorted(CASES))
def test_convert_4bit_and_generate_with_tiles(arch, tmp_path):
    (width, height), prompt_tokens, (before, after) = CASES[arch]
    hf = write_checkpoint(arch, tmp_path / "hf", hidden_size=64, image_size=32)
    out = tmp_path / "mlx"
    done = _python("convert/convert.py", "--hf-path", str(hf), "--mlx-path", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    image = write_image(tmp_path / "picture.png", width, height=height)
    stats_file = tmp_path / "s.json"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(out), "--image", str(image),
        "--prompt", "what color is the square ?", "--max-tokens", "3",
        "--stats-json", str(stats_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"Visual tokens: {before} -> {after}" in done.stdout
    stats = json.loads(stats_file.read_text())
    assert stats["preset"] == "mobile-50"
    assert stats["visual_tokens_per_image"] == [[before, after]]
    assert stats["prompt_tokens"] == prompt_tokens - before + after
    assert stats["generation_tokens"] == 3
