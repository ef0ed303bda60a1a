"""The checks of the ``restore-mlx-generate`` flag values: an InputError for a value
that cannot work, raised before the model or any image is read."""

from .convert import QUANT_BITS, QUANT_GROUP_SIZES
from .errors import InputError


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
