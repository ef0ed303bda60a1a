"""The ``restore-mlx-generate`` flags: mlx-vlm's generate flags that apply to an image
prompt (same names, meanings and defaults), RESTORE's own, and their checks."""

import argparse
import codecs
import json

from .config import BUDGET_POLICIES
from .convert import PRESET_KEY, QUANT_BITS, QUANT_GROUP_SIZES
from .core.api import REDUCERS
from .errors import InputError, OneLineParser
from .presets import DEFAULT_PRESET, PRESETS, get_preset


def resolve_config(args, model_config: dict):
    """The RestoreConfig and preset name (or None) the CLI flags ask for."""
    custom = args.method is not None or args.keep is not None or args.tokens is not None
    if args.preset is not None and custom:
        raise InputError("--preset cannot be combined with --method/--keep/--tokens")
    if args.keep is not None and args.tokens is not None:
        raise InputError("--keep and --tokens are alternatives; pass one")
    name = args.preset or model_config.get(PRESET_KEY) or DEFAULT_PRESET
    try:
        config = get_preset(name)
    except ValueError as e:
        raise InputError(str(e)) from None
    if custom:
        name = None
        if args.method is not None and args.method not in REDUCERS:
            known = ", ".join(sorted(REDUCERS))
            raise InputError(f"unknown method {args.method!r}; known methods: {known}")
        if args.keep is not None and not 0 < args.keep <= 1:
            raise InputError(f"--keep must be in (0, 1], got {args.keep}")
        if args.tokens is not None and args.tokens < 1:
            raise InputError(f"--tokens must be at least 1, got {args.tokens}")
        budget = {"keep": args.keep, "tokens": None}
        if args.tokens is not None:
            budget = {"keep": None, "tokens": args.tokens}
        elif args.keep is None:
            budget = {"keep": config.keep, "tokens": config.tokens}
        config = config.with_(method=args.method or config.method, **budget)
    if args.no_restore:
        config = config.with_(restore=False)
    if args.budget_policy is not None:
        config = config.with_(budget_policy=args.budget_policy)
    return config, name


PROG = "restore-mlx-generate"

# The CLI flags handed to mlx-vlm's generation unchanged, under the same names
# (mlx_vlm.generate's main passes them the same way; its generate_step builds the
# sampler and logits processors from them).
GENERATION_FLAGS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "repetition_context_size",
    "presence_penalty",
    "presence_context_size",
    "frequency_penalty",
    "frequency_context_size",
    "prefill_step_size",
    "max_kv_size",
    "kv_bits",
    "kv_group_size",
    "kv_quant_scheme",
    "quantized_kv_start",
    "seed",
    "skip_special_tokens",
)


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


def check_args(args) -> None:
    """InputError for flag values that cannot work, before anything is read."""
    images = args.image or []
    if args.prompt is None and not args.chat:
        raise InputError(
            "--prompt is required (or --chat, to read messages from stdin)"
        )
    if not all(message.strip() for message in args.prompt or []):
        raise InputError("--prompt must not be empty or whitespace only")
    if args.max_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.overlay and not args.overlay.lower().endswith(".png"):
        raise InputError(
            f"--overlay writes a PNG: its path must end in .png, got {args.overlay}"
        )
    if args.overlay and (not images or any("://" in i for i in images)):
        raise InputError("--overlay needs every --image to be a local file")
    _check_processing(args)
    _check_cache(args)


def _check_processing(args) -> None:
    from mlx_vlm.generate.dispatch import normalize_resize_shape

    try:
        normalize_resize_shape(args.resize_shape)
    except ValueError as e:
        raise InputError(f"--resize-shape: {e}") from None
    if min(args.resize_shape or [1]) < 1:
        raise InputError(f"--resize-shape must be positive, got {args.resize_shape}")
    if not isinstance(args.processor_kwargs, dict):
        raise InputError("--processor-kwargs must be a JSON object")


def _check_cache(args) -> None:
    if args.prefill_step_size is not None and args.prefill_step_size < 1:
        raise InputError(
            f"--prefill-step-size must be at least 1, got {args.prefill_step_size}"
        )
    if args.max_kv_size is not None and args.max_kv_size < args.max_tokens + 1:
        # Even a one-token prompt would wrap: no need to load the model to know.
        raise InputError(
            f"--max-kv-size {args.max_kv_size} cannot hold a prompt plus --max-tokens "
            f"{args.max_tokens}; raise it or leave it unset"
        )
    uniform = (
        args.kv_quant_scheme == "uniform" and float(args.kv_bits or 0).is_integer()
    )
    if args.kv_bits is not None and uniform:
        # mlx quantizes the uniform cache with mx.quantize: the same widths as weights.
        if int(args.kv_bits) not in QUANT_BITS:
            choices = ", ".join(map(str, QUANT_BITS))
            raise InputError(
                f"--kv-bits {args.kv_bits:g} is not supported; choose from {choices}"
            )
        if args.kv_group_size not in QUANT_GROUP_SIZES:
            choices = ", ".join(map(str, QUANT_GROUP_SIZES))
            raise InputError(
                f"--kv-group-size {args.kv_group_size} is not supported; "
                f"choose from {choices}"
            )


def generation_kwargs(args) -> dict:
    """The keyword arguments the flags hand to mlx-vlm's generation."""
    kwargs = {name: getattr(args, name) for name in GENERATION_FLAGS}
    if args.eos_tokens is not None:
        kwargs["eos_tokens"] = [_unescape(token) for token in args.eos_tokens]
    if args.image:
        kwargs["resize_shape"] = args.resize_shape
        kwargs["processor_kwargs"] = args.processor_kwargs
    return kwargs


def _unescape(token: str) -> str:
    """An --eos-tokens value with its backslash escapes decoded, as in mlx-vlm."""
    try:
        return codecs.decode(token, "unicode_escape")
    except (UnicodeDecodeError, UnicodeError):
        return token
