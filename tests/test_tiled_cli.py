"""SmolVLM and LFM2-VL end to end: a tiny HF-layout checkpoint (published config
structure, HF parameter names, real special tokens and chat template) converted to
4-bit by the runner script, then ``python -m restore_mlx.generate`` on a real image
file in a subprocess. A 64 px image is cut into 2 x 2 tiles of 32 px plus the global
image (SmolVLM) or thumbnail (LFM2-VL): 5 views of 4 x 4 tokens."""

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
# arch -> prompt tokens of the unreduced request (text and markers + 80 visual)
PROMPT_TOKENS = {"smolvlm": 103, "lfm2_vl": 99}


def _python(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True
    )


@pytest.mark.parametrize("arch", sorted(PROMPT_TOKENS))
def test_convert_4bit_and_generate_with_tiles(arch, tmp_path):
    hf = write_checkpoint(arch, tmp_path / "hf", hidden_size=64, image_size=32)
    out = tmp_path / "mlx"
    done = _python("convert/convert.py", "--hf-path", str(hf), "--mlx-path", str(out))
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    image, stats_file = write_image(tmp_path / "picture.png", 64), tmp_path / "s.json"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(out), "--image", str(image),
        "--prompt", "what color is the square ?", "--max-tokens", "3",
        "--stats-json", str(stats_file),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Visual tokens: 80 -> 40" in done.stdout
    stats = json.loads(stats_file.read_text())
    assert stats["preset"] == "mobile-50"
    assert stats["visual_tokens_per_image"] == [[80, 40]]
    assert stats["prompt_tokens"] == PROMPT_TOKENS[arch] - 80 + 40
    assert stats["generation_tokens"] == 3
