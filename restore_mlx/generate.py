"""Generate with RESTORE visual token reduction: library functions and the CLI.

``generate`` / ``stream_generate`` take the same arguments as mlx-vlm's. When the model
has RESTORE applied (``restore_mlx.apply``) and there is an image, the prompt is
reduced first (``restore_mlx.prepare_inputs``) and mlx-vlm generates from the reduced
sequence; otherwise they are plain mlx-vlm.

    python -m restore_mlx.generate --model mlx-community/llava-1.5-7b-4bit \\
        --image cat.png --prompt "What is in the image?" --preset mobile-50

mlx-vlm is imported inside functions only: ``import restore_mlx`` binds these
functions at import time and must stay cheap.
"""

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


def reduced_call(model, processor, prompt, images, kwargs):
    """Reduce the prompt; the keyword arguments that hand it to mlx-vlm."""
    from .integration import prepare_inputs

    prepared = prepare_inputs(model, processor, prompt, images)
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


def configure_parser() -> OneLineParser:
    """The ``restore-mlx-generate`` argument parser."""
    from .presets import DEFAULT_PRESET, PRESETS

    p = OneLineParser(
        prog="restore-mlx-generate",
        description="Generate with a VLM whose visual tokens RESTORE reduces.",
    )
    p.add_argument("--model", required=True, help="MLX model folder or hub repo id.")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        help="Image path or URL (one per prompt). Without one, the prompt runs "
        "unreduced.",
    )
    p.add_argument("--prompt", required=True, help="The user message.")
    p.add_argument("--system", default=None, help="An optional system message.")
    p.add_argument(
        "--preset",
        default=None,
        help=f"One of {', '.join(PRESETS)} "
        f"(default: the model's restore_preset, else {DEFAULT_PRESET}).",
    )
    p.add_argument("--method", default=None, help="Base reducer instead of a preset.")
    p.add_argument(
        "--keep",
        type=float,
        default=None,
        help="Fraction of visual tokens kept, in (0, 1].",
    )
    p.add_argument("--tokens", type=int, default=None, help="Visual tokens kept.")
    p.add_argument(
        "--no-restore",
        action="store_true",
        help="Reduce with the base "
        "method alone (no RESTORE positions, calibration or anchors).",
    )
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--stats-json", default=None, help="Write the statistics here.")
    p.add_argument(
        "--overlay",
        default=None,
        help="Write a PNG of the image with "
        "the reduced tokens' patch groups drawn over it.",
    )
    return p


def _format_prompt(processor, model, prompt, system, num_images):
    from mlx_vlm.prompt_utils import apply_chat_template

    messages = [{"role": "user", "content": prompt}]
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


def _prepare_model(args, images):
    """Check everything cheap, then load and patch the model: (model, processor,
    config, preset)."""
    from .convert import check_supported, read_model_config

    model_config = read_model_config(args.model)
    check_supported(model_config, source=args.model)
    config, preset = resolve_config(args, model_config)
    from .adapters.processors import load

    try:
        model, processor = load(args.model)
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


def _main(args) -> None:
    if len(args.image) > 1:  # as in mlx-vlm's generate, one image per prompt
        raise InputError(f"one --image per prompt is supported, got {len(args.image)}")
    if args.overlay and (not args.image or "://" in args.image[0]):
        raise InputError("--overlay needs an --image that is a local file")
    check_output(args.stats_json, "--stats-json")
    check_output(args.overlay, "--overlay")
    pictures = check_images(args.image)
    model, processor, config, preset = _prepare_model(args, args.image)
    if not args.image:
        print("No --image given: running unreduced.", file=sys.stderr)
    prompt = _format_prompt(processor, model, args.prompt, args.system, len(args.image))
    if args.seed is not None:
        import mlx.core as mx

        mx.random.seed(args.seed)
    sampling = {"max_tokens": args.max_tokens, "temperature": args.temperature}
    on_text = lambda text: print(text, end="", flush=True)  # noqa: E731
    prepared, stats = measured_generate(
        model,
        processor,
        prompt,
        args.image,
        config,
        on_text,
        seed=args.seed,
        **sampling,
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
