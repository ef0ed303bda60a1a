"""Generate with RESTORE visual token reduction: library functions and the CLI.

``generate`` / ``stream_generate`` take the same arguments as mlx-vlm's. When the model
has RESTORE applied (``restore_mlx.apply``) and there is an image, the prompt is
reduced first (``restore_mlx.prepare_inputs``) and mlx-vlm generates from the reduced
sequence; otherwise they are plain mlx-vlm. While reducing, ``resize_shape`` and
``processor_kwargs`` (a dict) go to the processor, and a rotating cache
(``max_kv_size``) that the reduced prompt plus ``max_tokens`` would wrap raises
KVCacheTooSmall (a ValueError) instead of misplacing RESTORE's biases.

The CLI takes mlx_vlm.generate's flags for an image prompt, same names and defaults.

    python -m restore_mlx.generate --model mlx-community/llava-1.5-7b-4bit \\
        --image cat.png --prompt "What is in the image?" --preset mobile-50

mlx-vlm is imported inside functions only: ``import restore_mlx`` binds these
functions at import time and must stay cheap.
"""

import argparse
import codecs
import json
import sys
from dataclasses import asdict

from .errors import (
    InputError,
    OneLineParser,
    check_images,
    check_output,
    fail,
    write_json_atomic,
)
from .measure import format_stats, measured_generate


def _as_list(image) -> list:
    if image is None:
        return []
    return list(image) if isinstance(image, (list, tuple)) else [image]


def _reduces(model, images) -> bool:
    from .integration import is_applied

    return bool(images) and is_applied(model)


class KVCacheTooSmall(ValueError):
    """A rotating KV cache (``max_kv_size``) that would wrap during a reduced prompt's
    generation: RESTORE's per-key biases would then land on the wrong keys."""


# Keywords of a generate call that shape the processor's input, not mlx-vlm's decoding.
PROCESSING_KWARGS = ("resize_shape", "processor_kwargs")


def check_cache_fits(prompt_tokens: int, kwargs: dict) -> None:
    """KVCacheTooSmall unless ``max_kv_size`` (if set) holds the prompt and the answer.

    RESTORE biases keys by their position in the cache; a rotating cache that wraps
    overwrites old keys in place, so the biases would miss (or fail on a shape)."""
    size = kwargs.get("max_kv_size")
    if size is None:
        return
    from mlx_vlm.generate.common import DEFAULT_MAX_TOKENS

    max_tokens = kwargs.get("max_tokens", DEFAULT_MAX_TOKENS)
    need = prompt_tokens + max_tokens
    if need > size:
        raise KVCacheTooSmall(
            f"max_kv_size {size} cannot hold the reduced prompt ({prompt_tokens} "
            f"tokens) plus max_tokens {max_tokens}: the rotating KV cache would wrap "
            f"and misplace RESTORE's biases; set max_kv_size to at least {need}, "
            "lower max_tokens, or leave max_kv_size unset"
        )


def reduced_call(model, processor, prompt, images, kwargs):
    """Reduce the prompt; the keyword arguments that hand it to mlx-vlm.

    ``resize_shape`` and ``processor_kwargs`` (a dict) in ``kwargs`` go to the
    processor; KVCacheTooSmall when ``max_kv_size`` cannot hold the reduced prompt
    and ``max_tokens``."""
    from .integration import prepare_inputs

    kwargs = dict(kwargs)
    processing = {k: kwargs.pop(k) for k in PROCESSING_KWARGS if k in kwargs}
    prepared = prepare_inputs(model, processor, prompt, images, **processing)
    if prepared.reduction is not None:
        check_cache_fits(prepared.prompt_tokens, kwargs)
    merged = {**kwargs, **prepared.generate_kwargs, "input_ids": prepared.input_ids}
    return prepared, merged


def stream_generate(model, processor, prompt, image=None, **kwargs):
    """Like ``mlx_vlm.stream_generate``, reducing the visual tokens when RESTORE is
    applied to ``model`` and there is an image. Yields mlx-vlm ``GenerationResult``s."""
    from mlx_vlm import stream_generate as vlm_stream_generate

    images = _as_list(image)
    if _reduces(model, images):
        _, kwargs = reduced_call(model, processor, prompt, images, kwargs)
    yield from vlm_stream_generate(model, processor, prompt, images or None, **kwargs)


def generate(model, processor, prompt, image=None, **kwargs):
    """Like ``mlx_vlm.generate`` (returns its ``GenerationResult``), reducing the visual
    tokens when RESTORE is applied to ``model`` and there is an image."""
    from mlx_vlm import generate as vlm_generate

    images = _as_list(image)
    if _reduces(model, images):
        _, kwargs = reduced_call(model, processor, prompt, images, kwargs)
    return vlm_generate(model, processor, prompt, images or None, **kwargs)


def resolve_config(args, model_config: dict):
    """The RestoreConfig and preset name (or None) the CLI flags ask for."""
    from . import REDUCERS
    from .convert import PRESET_KEY
    from .presets import DEFAULT_PRESET, get_preset

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
        help="URL or path of the image to process (one per prompt for now). "
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
        required=True,
        help="Message to be processed by the model; several strings are several "
        "user messages, as in mlx_vlm.generate.",
    )
    p.add_argument(
        "--system", default=None, help="System message for the model (default: none)."
    )


def _restore_flags(p) -> None:
    from .presets import DEFAULT_PRESET, PRESETS

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


def _format_prompt(processor, model, prompt, system, num_images):
    """The chat-formatted prompt, built as mlx_vlm.generate builds it: each --prompt
    string a user message (the image goes with the last), the system message first."""
    from mlx_vlm.prompt_utils import apply_chat_template

    messages = list(prompt)
    if system:
        messages.insert(0, {"role": "system", "content": system})
    return apply_chat_template(processor, model.config, messages, num_images=num_images)


def _label(config, preset) -> str:
    budget = (
        f"{config.tokens} tokens" if config.keep is None else f"keep {config.keep:g}"
    )
    restore = "on" if config.restore else "off"
    name = f"preset {preset}: " if preset else ""
    return f"{name}{config.method}, {budget}, RESTORE {restore}"


def check_args(args) -> None:
    """InputError for flag values that cannot work, before anything is read."""
    images = args.image or []
    if len(images) > 1:
        raise InputError("several images per prompt are not supported yet")
    if not all(message.strip() for message in args.prompt):
        raise InputError("--prompt must not be empty or whitespace only")
    if args.max_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    if args.overlay and not args.overlay.lower().endswith(".png"):
        raise InputError(
            f"--overlay writes a PNG: its path must end in .png, got {args.overlay}"
        )
    if args.overlay and (not images or "://" in images[0]):
        raise InputError("--overlay needs an --image that is a local file")
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
    from .convert import QUANT_BITS, QUANT_GROUP_SIZES

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


def _prepare_model(args, images):
    """Check everything cheap, then load and patch the model: (model, processor,
    config, preset)."""
    from .convert import check_supported, read_model_config

    model_config = read_model_config(args.model, revision=args.revision)
    check_supported(model_config, source=args.model)
    config, preset = resolve_config(args, model_config)
    from .adapters.processors import load

    try:
        model, processor = load(
            args.model,
            adapter_path=args.adapter_path,
            revision=args.revision,
            trust_remote_code=args.trust_remote_code,
        )
    except (OSError, ValueError, KeyError) as e:  # missing or mismatched weights
        raise InputError(f"cannot load model {args.model}: {e}") from None
    if images:
        from .integration import apply

        try:
            apply(model, config=config)
        except ValueError as e:  # e.g. a reducer this architecture cannot run
            raise InputError(str(e)) from None
    return model, processor, config, preset


def _save_overlay(path, picture, model, processor, prepared) -> None:
    from .overlay import model_view, save_overlay, token_grid

    if prepared is None or prepared.reduction is None:
        print("Nothing was reduced: no overlay written.", file=sys.stderr)
        return
    r = prepared.reduction
    merge = getattr(model.config.vision_config, "spatial_merge_size", 1)
    grid = token_grid(r.assignment.shape[1], prepared.generate_kwargs, merge)
    view = model_view(picture, getattr(processor, "image_processor", None))
    save_overlay(path, view, r.assignment[0].tolist(), r.merged[0].tolist(), grid)


def _show_request(images, prompt) -> None:
    """--verbose: what mlx_vlm.generate shows before it answers, and its INFO logs."""
    # mlx-vlm's own switch for its INFO records (mlx-vlm is pinned to 0.7.10).
    from mlx_vlm.generate.dispatch import _enable_verbose_logging

    print("=" * 10)
    print(f"Files: {list(images)}", "\n")
    print("Prompt:", prompt)
    _enable_verbose_logging()


def _main(args) -> None:
    check_args(args)
    images = args.image or []
    check_output(args.stats_json, "--stats-json")
    check_output(args.overlay, "--overlay")
    pictures = check_images(images)
    model, processor, config, preset = _prepare_model(args, images)
    if not images:
        print("No --image given: running unreduced.", file=sys.stderr)
    prompt = _format_prompt(processor, model, args.prompt, args.system, len(images))
    if args.verbose:
        _show_request(images, prompt)
    if args.seed is not None:
        import mlx.core as mx

        mx.random.seed(args.seed)
    on_text = lambda text: print(text, end="", flush=True)  # noqa: E731
    prepared, stats = measured_generate(
        model, processor, prompt, images, config, on_text, **generation_kwargs(args)
    )
    stats.preset = preset if prepared is not None else None
    print(format_stats(stats, _label(config, preset)))
    if args.overlay:
        _save_overlay(args.overlay, pictures[0], model, processor, prepared)
    if args.stats_json:
        write_json_atomic(args.stats_json, asdict(stats))


def main(argv=None) -> None:
    """Command-line entry point: ``python -m restore_mlx.generate``."""
    parser = configure_parser()
    args = parser.parse_args(argv)
    try:
        _main(args)
    except InputError as e:
        fail(e, prog=parser.prog)


if __name__ == "__main__":
    main()
