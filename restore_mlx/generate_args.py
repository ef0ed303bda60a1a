"""The ``restore-mlx-generate`` flags: mlx-vlm's generate flags that apply to an image
prompt (same names, meanings and defaults) and RESTORE's own. Their checks live in
``generate_checks``; what they resolve to (the RestoreConfig, mlx-vlm's keyword
arguments) in ``generate_resolve``."""

import argparse
import json

from .config import BUDGET_POLICIES
from .errors import OneLineParser
from .generate_checks import check_args
from .generate_resolve import generation_kwargs, resolve_config
from .presets import DEFAULT_PRESET, PRESETS

# Re-exported: ``generate`` and tests import the checks and resolution from here.
__all__ = ["check_args", "generation_kwargs", "resolve_config"]

PROG = "restore-mlx-generate"


def configure_parser() -> OneLineParser:
    """The ``restore-mlx-generate`` argument parser: mlx-vlm's generate flags that
    apply to one image prompt (same names, meanings and defaults), plus RESTORE's."""
    p = OneLineParser(
        prog=PROG,
        description="Generate with a VLM whose visual tokens RESTORE reduces.",
    )
    _model_flags(p)
    _input_flags(p)
    _restore_flags(p)
    _sampling_flags(p)
    _cache_flags(p)
    _output_flags(p)
    return p


def _model_flags(p) -> None:
    p.add_argument("--model", required=True, help="MLX model folder or hub repo id.")
    p.add_argument(
        "--adapter-path",
        default=None,
        help="The path to the adapter weights (default: none).",
    )
    p.add_argument(
        "--revision",
        default="main",
        help="The specific model version to use (branch, tag, commit).",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="Trust remote code when loading the model.",
    )


def _input_flags(p) -> None:
    p.add_argument(
        "--image",
        nargs="+",
        action="extend",
        default=None,
        help="URLs or paths of the images to process (several: one prompt about all of "
        "them, each reduced on its own, the budget shared as --budget-policy says). "
        "Without one, the prompt runs unreduced.",
    )
    p.add_argument(
        "--resize-shape",
        type=int,
        nargs="+",
        default=None,
        help="Resize shape for the image: SIDE or HEIGHT WIDTH "
        "(default: the processor's own size).",
    )
    p.add_argument(
        "--processor-kwargs",
        type=json.loads,
        default={},
        help="Extra processor kwargs as JSON. "
        'Example: --processor-kwargs \'{"cropping": false, "max_patches": 3}\'',
    )
    p.add_argument(
        "--prompt",
        nargs="+",
        default=None,
        help="Message to be processed by the model; several strings are several "
        "user messages, as in mlx_vlm.generate (required without --chat).",
    )
    p.add_argument(
        "--system", default=None, help="System message for the model (default: none)."
    )
    p.add_argument(
        "--chat",
        action="store_true",
        help="Chat in multi-turn style, as mlx_vlm.generate --chat: one message per "
        "line on standard input until an empty line or end of input. The image is "
        "reduced once and every turn prefills only what is new.",
    )


def _restore_flags(p) -> None:
    p.add_argument(
        "--preset",
        default=None,
        help=f"One of {', '.join(PRESETS)} "
        f"(default: the model's restore_preset, else {DEFAULT_PRESET}).",
    )
    p.add_argument(
        "--method",
        default=None,
        help="Base reducer instead of a preset (default: the preset's).",
    )
    p.add_argument(
        "--keep",
        type=float,
        default=None,
        help="Fraction of visual tokens kept, in (0, 1] (default: the preset's).",
    )
    p.add_argument(
        "--tokens",
        type=int,
        default=None,
        help="Visual tokens kept, instead of --keep (default: the preset's budget).",
    )
    p.add_argument(
        "--no-restore",
        action="store_true",
        help="Reduce with the base "
        "method alone (no RESTORE positions, calibration or anchors).",
    )
    p.add_argument(
        "--budget-policy",
        choices=BUDGET_POLICIES,
        default=None,
        help="How several images or tiles share the budget: 'proportional' to their "
        "tokens, or 'global', where the method's ranking of all their tokens together "
        "puts it (default: the preset's, proportional).",
    )


def _sampling_flags(p) -> None:
    from mlx_vlm.generate.common import (
        DEFAULT_MAX_TOKENS,
        DEFAULT_MIN_P,
        DEFAULT_REPETITION_CONTEXT_SIZE,
        DEFAULT_TEMPERATURE,
        DEFAULT_TOP_K,
        DEFAULT_TOP_P,
    )

    p.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help="Maximum number of tokens to generate (at least 1).",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="Temperature for sampling. Defaults to the checkpoint setting, "
        f"or {DEFAULT_TEMPERATURE} if unset. Zero is greedy; positive values below "
        "0.01 are clamped to 0.01.",
    )
    p.add_argument(
        "--top-p",
        type=float,
        default=None,
        help="Nucleus sampling: keep the smallest set of tokens whose "
        "probabilities sum to this. 1.0 disables it. Defaults to the checkpoint "
        f"setting, or {DEFAULT_TOP_P} if unset.",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="Keep only the k most probable tokens. 0 disables it. Defaults "
        f"to the checkpoint setting, or {DEFAULT_TOP_K} if unset.",
    )
    p.add_argument(
        "--min-p",
        type=float,
        default=DEFAULT_MIN_P,
        help="Drop tokens whose probability is below this fraction of the "
        "most probable token's. 0 disables it.",
    )
    _penalty_flags(p, DEFAULT_REPETITION_CONTEXT_SIZE)
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="PRNG seed for reproducible sampling (default: unseeded).",
    )
    p.add_argument(
        "--eos-tokens",
        nargs="+",
        default=None,
        help="EOS tokens to add to the tokenizer (default: the model's own).",
    )
    p.add_argument(
        "--skip-special-tokens",
        action="store_true",
        help="Skip special tokens in the detokenizer.",
    )


def _penalty_flags(p, context_size: int) -> None:
    penalties = (
        ("repetition", "Penalty factor for previously generated tokens"),
        ("presence", "Additive penalty for tokens that already appeared"),
        ("frequency", "Additive penalty scaled by token frequency"),
    )
    for name, meaning in penalties:
        p.add_argument(
            f"--{name}-penalty",
            type=float,
            default=None,
            help=f"{meaning} (default: none).",
        )
        p.add_argument(
            f"--{name}-context-size",
            type=int,
            default=context_size,
            help=f"Number of recent generated tokens used for {name} penalty.",
        )


def _cache_flags(p) -> None:
    from mlx_vlm.generate.common import (
        DEFAULT_KV_GROUP_SIZE,
        DEFAULT_KV_QUANT_SCHEME,
        DEFAULT_PREFILL_STEP_SIZE,
        DEFAULT_QUANTIZED_KV_START,
    )

    p.add_argument(
        "--prefill-step-size",
        type=int,
        default=DEFAULT_PREFILL_STEP_SIZE,
        help="Number of tokens to process per prefill step. Lower values reduce "
        "peak memory usage but may be slower. RESTORE's biases are exact in chunks.",
    )
    p.add_argument(
        "--max-kv-size",
        type=int,
        default=None,
        help="Maximum KV size for the prompt cache (a rotating cache; default: "
        "unbounded). With a reduced prompt it must hold the reduced prompt plus "
        "--max-tokens: a cache that would wrap is refused.",
    )
    p.add_argument(
        "--kv-bits",
        type=float,
        default=None,
        help="Number of bits to quantize the KV cache to (default: unquantized). "
        "Fractional values use TurboQuant.",
    )
    p.add_argument(
        "--kv-quant-scheme",
        choices=("uniform", "turboquant"),
        default=DEFAULT_KV_QUANT_SCHEME,
        help="KV cache quantization backend.",
    )
    p.add_argument(
        "--kv-group-size",
        type=int,
        default=DEFAULT_KV_GROUP_SIZE,
        help="Group size for uniform KV cache quantization.",
    )
    p.add_argument(
        "--quantized-kv-start",
        type=int,
        default=DEFAULT_QUANTIZED_KV_START,
        help="Start index for the quantized KV cache.",
    )


def _output_flags(p) -> None:
    p.add_argument(
        "--verbose",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Also print the files and the formatted prompt, and mlx-vlm's "
        "progress logs. The answer and its statistics are always printed.",
    )
    p.add_argument(
        "--stats-json",
        default=None,
        help="Write the statistics here as JSON (default: not written).",
    )
    p.add_argument(
        "--overlay",
        default=None,
        help="Write a PNG (path ending in .png) of the image with the reduction "
        "drawn over it: a green outline marks a kept token (one patch each); a "
        "light tint with an outline in the same colour marks a merged group (one "
        "colour per group); a legend below says so (default: not written).",
    )
