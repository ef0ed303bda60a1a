"""Proof that the calibration tests bite: break the calibration on purpose, one way at a
time, in a copy of the package, and show which tests fail.

    python tests/mutations.py            # the calibration tests, ~1 minute per mutation
    python tests/mutations.py --all      # the whole suite per mutation (slow)

Each mutation replaces one exact snippet of the package source; a snippet that is no
longer found is an error (the mutation went stale with a refactor: update it). Exit
status 1 when any mutation survives (no test failed).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CALIBRATION_TESTS = (
    "tests/test_calibration.py",
    "tests/test_calibration_model.py",
    "tests/test_variants.py",
    "tests/test_gemma3.py",
)

MODEL_LEVEL = "test_calibration_model.py"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    old: str
    new: str


MUTATIONS = (
    Mutation(
        "prefill size bias sign flipped",
        "restore_mlx/core/calibration.py",
        "mask = mask + size_bias[None, :num_keys]",
        "mask = mask - size_bias[None, :num_keys]",
    ),
    Mutation(
        "decode size bias sign flipped",
        "restore_mlx/core/calibration.py",
        "return mx.pad(size_bias.astype(dtype), (0, length - prompt))",
        "return mx.pad(-size_bias.astype(dtype), (0, length - prompt))",
    ),
    Mutation(
        "size bias one key to the right",
        "restore_mlx/core/calibration.py",
        "out[visual_slots] = sizes",
        "out[visual_slots + 1] = sizes",
    ),
    Mutation(
        "distance bias at re-indexed positions",
        "restore_mlx/state.py",
        "positions = lay.bias_positions",
        "positions = mx.broadcast_to(\n        mx.arange(lay.input_ids.shape[1]), lay.bias_positions.shape\n    )",
    ),
    Mutation(
        "distance bias dropped",
        "restore_mlx/state.py",
        "dist = cal.distance_bias(pos[..., offset:end], pos[..., :end], table)",
        "dist = None",
    ),
    Mutation(
        "layer 0 gets the later layers' sizes",
        "restore_mlx/state.py",
        "if cfg.uniform_first_layer:",
        "if False:",
    ),
    Mutation(
        "RoPE theta exponent k/d instead of 2k/d",
        "restore_mlx/core/calibration.py",
        "exponents = mx.arange(0, rotary_dim, 2, dtype=mx.float32) / rotary_dim",
        "exponents = mx.arange(0, rotary_dim // 2, dtype=mx.float32) / rotary_dim",
    ),
    Mutation(
        "gemma3 global layers biased with the local RoPE base",
        "restore_mlx/adapters/gemma3.py",
        "thetas = cal.rope_thetas(rope.dims, rope.base, scale=rope.scale)",
        "thetas = cal.rope_thetas(rope.dims, 1e4, scale=rope.scale)",
    ),
    Mutation(
        "gemma3 sliding layers biased with the global RoPE base",
        "restore_mlx/adapters/gemma3.py",
        "thetas = cal.rope_thetas(rope.dims, rope.base, scale=rope.scale)",
        "thetas = cal.rope_thetas(rope.dims, 1e6, scale=rope.scale)",
    ),
    Mutation(
        "every layer given the first kind's mask",
        "restore_mlx/state.py",
        "return tuple(freqs.kinds), tuple(freqs.of_layer)",
        "return tuple(freqs.kinds), tuple(0 for _ in freqs.of_layer)",
    ),
    Mutation(
        "sliding window left out of the bias mask",
        "restore_mlx/state.py",
        "windows = tuple(kind.window for kind in kinds)",
        "windows = tuple(None for kind in kinds)",
    ),
    Mutation(
        "ring buffer read in time order",
        "restore_mlx/adapters/patching.py",
        "return mx.where(slots < keep, slots, ring)",
        "return slots + (end - num_keys)",
    ),
    Mutation(
        "hybrid: uniform sizes skip the first attention layer",
        "restore_mlx/adapters/lfm2_vl.py",
        "mask = plan.mask(self._restore_layer, mask)",
        "mask = plan.mask(self._restore_layer + 1, mask)",
    ),
    Mutation(
        "M-RoPE axes in reverse order",
        "restore_mlx/adapters/qwen.py",
        "[int(a) for a in selector.tolist()]",
        "[int(a) for a in selector.tolist()[::-1]]",
    ),
    Mutation(
        "interleaved M-RoPE read as chunked sections",
        "restore_mlx/adapters/qwen.py",
        'selector = getattr(rotary, "position_selector", None)',
        "selector = None",
    ),
    Mutation(
        "deepstack levels of pruned tokens averaged over coverage groups",
        "restore_mlx/core/api.py",
        "if keeps_tokens_as_is(method, restore=restore, anchors=anchors):",
        "if False:",
    ),
    Mutation(
        "deepstack levels dropped",
        "restore_mlx/adapters/qwen3_vl.py",
        "    if levels:",
        "    if False:",
    ),
)


def mutated_copy(mutation: Mutation, into: Path) -> Path:
    """A copy of the package and tests under ``into`` with ``mutation`` applied."""
    for part in ("restore_mlx", "tests"):
        shutil.copytree(
            ROOT / part, into / part, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    target = into / mutation.path
    source = target.read_text()
    if source.count(mutation.old) != 1:
        raise SystemExit(
            f"stale mutation {mutation.name!r}: {mutation.old!r} occurs "
            f"{source.count(mutation.old)} times in {mutation.path}, expected once"
        )
    target.write_text(source.replace(mutation.old, mutation.new))
    return into


def failing_tests(workdir: Path, tests) -> list:
    """Names of the tests that fail in ``workdir`` (its own package copy is imported)."""
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-rf",
        "-p",
        "no:cacheprovider",
        *tests,
    ]
    run = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    return re.findall(r"^FAILED (\S+)", run.stdout, re.M)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python tests/mutations.py", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--all", action="store_true", help="run the whole suite per mutation"
    )
    parser.add_argument(
        "--only", default="", help="only the mutations whose name contains this"
    )
    args = parser.parse_args(argv)
    tests = ["tests"] if args.all else list(CALIBRATION_TESTS)
    survivors = 0
    print("| mutation | failing tests | of them model-level | e.g. |")
    print("|---|---|---|---|")
    for mutation in (m for m in MUTATIONS if args.only in m.name):
        with tempfile.TemporaryDirectory() as tmp:
            failed = failing_tests(mutated_copy(mutation, Path(tmp)), tests)
        survivors += not failed
        model_level = [f for f in failed if MODEL_LEVEL in f]
        example = (model_level or failed or ["SURVIVED"])[0].split("/")[-1]
        row = (mutation.name, len(failed), len(model_level), example)
        print("| " + " | ".join(map(str, row)) + " |", flush=True)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
