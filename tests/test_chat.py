"""Chat: a turn served from the previous turn's KV cache equals the same prompt run
afresh, for every architecture; the CLI's --chat prefills only the new tokens."""

import os
import subprocess
import sys

import mlx.core as mx
import pytest
from conftest import BUILDERS
from test_batching import RECIPES, follow_up
from test_integration import run_generate, run_prepared

import restore_mlx.integration as ri
from restore_mlx.bench.checkpoints import write_checkpoint, write_image
from restore_mlx.chat import PromptCache, turn_kwargs


def run_turn(model, prepared, prompt_cache, keep):
    model._restore_state.set_prompt(prepared.prompt)
    kwargs = turn_kwargs(prepared, prompt_cache.take(model, keep), keep)
    ids, pixels = kwargs.pop("input_ids"), kwargs.pop("pixel_values", None)
    out = run_generate(model, ids, pixels, kwargs)
    prompt_cache.ids = prepared.input_ids[0].tolist()
    return out


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_turn_from_the_previous_prompt_equals_it_afresh(arch):
    model, sample = BUILDERS[arch]()
    ri.apply(model)
    first = ri.prepare_tokens(model, sample, config=RECIPES["half"])
    second = follow_up(model, sample, first)
    model._restore_state.set_prompt(second.prompt)
    afresh = run_prepared(model, second)

    cache = PromptCache()
    run_turn(model, first, cache, 0)  # its answer is decoded into the cache too
    keep = cache.reusable(second.input_ids[0].tolist())
    if all(c.is_trimmable() for c in cache.cache):
        assert keep == first.prompt_tokens  # the whole previous prompt, no answer
    else:  # hybrid layers' recurrent state cannot be cut back: prefilled afresh
        assert keep == 0
    got = run_turn(model, second, cache, keep)
    for a, b in zip(got, afresh):
        assert mx.argmax(a).item() == mx.argmax(b).item()
        assert mx.allclose(a, b, atol=1e-5).item()


def test_cli_chat_prefills_only_the_new_tokens(tmp_path):
    model = write_checkpoint("qwen2_vl", tmp_path / "model")
    image = write_image(tmp_path / "image.png", size=56)
    cmd = [sys.executable, "-m", "restore_mlx.generate", "--model", str(model),
           "--image", str(image), "--chat", "--max-tokens", "4", "--temperature", "0"]  # fmt: skip
    run = subprocess.run(
        cmd,
        input="what color is at a1\nwhat color is at c4\n",  # then end of input
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert run.returncode == 0, run.stderr[-2000:]
    stats = [line for line in run.stdout.splitlines() if line.startswith("Prefilled")]
    assert len(stats) == 2
    (p1, r1, t1), (p2, r2, t2) = [
        [int(w) for w in line.replace("(", " ").split() if w.isdigit()][:3]
        for line in stats
    ]
    assert (r1, p1) == (0, t1)  # turn 1: the whole reduced prompt
    assert r2 == t1 and p2 == t2 - t1  # turn 2: only what follows turn 1's prompt
    assert p2 < p1
    assert "visual tokens 16 -> 8" in stats[1]  # the same reduction, reused
