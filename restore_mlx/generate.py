"""Generate with RESTORE visual token reduction: the CLI, and (as in mlx-lm) the
library functions ``generate`` / ``stream_generate`` (defined in ``generation``).

The CLI takes mlx_vlm.generate's flags for an image prompt, same names and defaults
(``generate_args``).

    python -m restore_mlx.generate --model mlx-community/llava-1.5-7b-4bit \\
        --image cat.png --prompt "What is in the image?" --preset mobile-50

mlx-vlm is imported inside functions only: ``import restore_mlx`` binds the library
functions at import time and must stay cheap.
"""

import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .adapters import adapter_for
from .adapters.processors import load
from .chat import ChatSession
from .convert import check_supported, read_model_config
from .errors import (
    InputError,
    check_images,
    check_output,
    fail,
    write_atomic,
    write_json_atomic,
)
from .generate_args import (
    check_args,
    configure_parser,
    generation_kwargs,
    resolve_config,
)
from .generation import generate, stream_generate  # noqa: F401 (library API)
from .integration import apply
from .measure import format_stats, measured_generate
from .overlay import model_view, render_tiled, token_grid


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
    parts = [
        name
        for name, on in (
            ("positions", config.positions),
            ("calibration", config.size_bias or config.distance_bias),
            ("anchors", config.anchors),
        )
        if on
    ]
    if not config.restore:
        restore = "RESTORE off"
    elif len(parts) == 3:
        restore = "RESTORE on"
    else:  # a partial recipe, e.g. the mobile presets' original positions alone
        restore = "RESTORE: " + (" + ".join(parts) or "no part")
    name = f"preset {preset}: " if preset else ""
    return f"{name}{config.method}, {budget}, {restore}"


def _prepare_model(args, images):
    """Check everything cheap, then load and patch the model: (model, processor,
    config, preset)."""
    model_config = read_model_config(args.model, revision=args.revision)
    check_supported(model_config, source=args.model)
    config, preset = resolve_config(args, model_config)
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
        try:
            apply(model, config=config)
        except ValueError as e:  # e.g. a reducer this architecture cannot run
            raise InputError(str(e)) from None
    return model, processor, config, preset


def overlay_paths(path, count: int) -> list:
    """``path`` for one image; ``name-1.png``, ``name-2.png``... for several."""
    if count == 1:
        return [path]
    p = Path(path)
    return [p.with_name(f"{p.stem}-{i + 1}{p.suffix}") for i in range(count)]


def _save_overlays(
    path, pictures, processor, prepared, model, resize_shape=None
) -> None:
    """One overlay per image, each showing that image's tokens and groups: every view
    over the region of the picture it covers (``segment_boxes`` of the model's
    adapter: tiles over their cells, a single view over all of it), a downscaled view
    of the whole picture (thumbnail, global or base image) on a panel to the right.
    ``resize_shape``: the --resize-shape the pictures went to the processor with."""
    from mlx_vlm.generate.dispatch import normalize_resize_shape
    from mlx_vlm.utils import process_image

    resize_shape = normalize_resize_shape(resize_shape)
    if prepared is None or prepared.reduction is None:
        print("Nothing was reduced: no overlay written.", file=sys.stderr)
        return
    r = prepared.reduction
    labels, merged = np.array(r.assignment[0]), r.merged[0].tolist()
    view_of = getattr(processor, "image_processor", None)
    adapter = adapter_for(model)
    drawn = []  # every picture first, so a failure leaves no partial set behind
    for i, out in enumerate(overlay_paths(path, len(pictures))):
        mine = [s for s in prepared.segments if s.image == i]
        view = model_view(pictures[i], view_of)
        panels = {False: [], True: []}
        # The tiling follows the picture as the processor received it.
        seen = process_image(pictures[i], resize_shape, view_of)
        try:
            boxes = adapter.segment_boxes(model, processor, seen, mine)
        except ValueError as e:  # e.g. --processor-kwargs that change the tiling
            raise InputError(f"--overlay: {e}") from None
        for placed in boxes:
            segment = placed.segment
            local = labels[segment.indices()]
            first = int(local.min())
            grid = segment.grid or token_grid(segment.length)
            flags = merged[first : int(local.max()) + 1]
            panels[placed.overview].append((local - first, flags, grid, placed.box))
        drawn.append((out, render_tiled(view, panels[False], overview=panels[True])))
    for out, picture in drawn:
        write_atomic(
            Path(out), lambda f, p=picture: p.save(f, format="PNG"), binary=True
        )


def _show_request(images, prompt) -> None:
    """--verbose: what mlx_vlm.generate shows before it answers, and its INFO logs."""
    # mlx-vlm's own switch for its INFO records (mlx-vlm is pinned to 0.7.10).
    from mlx_vlm.generate.dispatch import _enable_verbose_logging

    print("=" * 10)
    print(f"Files: {list(images)}", "\n")
    print("Prompt:", prompt)
    _enable_verbose_logging()


def _chat(args, model, processor, config, images) -> None:
    """--chat: read messages from stdin, answer each from the reduced prefix."""
    kwargs = generation_kwargs(args)
    processing = {
        k: kwargs.pop(k) for k in ("resize_shape", "processor_kwargs") if k in kwargs
    }
    session = ChatSession(model, processor, images, config, args.system, processing)
    on_text = lambda text: print(text, end="", flush=True)  # noqa: E731
    while True:
        try:
            user = input("User: ")
        except EOFError:
            break
        if not user.strip():
            break
        print("Assistant: ", end="", flush=True)
        turn = session.ask(user, on_text, **kwargs)
        print()
        visual = ""
        if turn.visual_tokens_before:
            visual = (
                f"; visual tokens {turn.visual_tokens_before} -> "
                f"{turn.visual_tokens_after}"
            )
        print(
            f"Prefilled {turn.prefilled_tokens} tokens "
            f"({turn.reused_tokens} of {turn.prompt_tokens} from the previous "
            f"turns){visual}",
            flush=True,
        )


def _main(args) -> None:
    check_args(args)
    images = args.image or []
    check_output(args.stats_json, "--stats-json")
    check_output(args.overlay, "--overlay")
    pictures = check_images(images)
    model, processor, config, preset = _prepare_model(args, images)
    if not images:
        print("No --image given: running unreduced.", file=sys.stderr)
    if args.chat:
        return _chat(args, model, processor, config, images)
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
        resize = generation_kwargs(args).get("resize_shape")
        _save_overlays(args.overlay, pictures, processor, prepared, model, resize)
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
