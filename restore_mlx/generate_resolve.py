"""What the parsed ``restore-mlx-generate`` flags resolve to: the RestoreConfig and
preset name RESTORE runs with, and the keyword arguments handed to mlx-vlm's
generation."""

import codecs

from .convert import PRESET_KEY
from .core.api import REDUCERS
from .errors import InputError
from .presets import DEFAULT_PRESET, get_preset


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
