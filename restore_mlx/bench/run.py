"""Speed and memory: unpatched mlx-vlm vs each base reducer alone and with RESTORE.

One process, interleaved: every repeat runs the unpatched model, then every
(keep, method, variant), then reverses the order on the next repeat, so slow drift of
the machine lands on every row alike. Rows report medians over the repeats; RESTORE vs
its base is paired within each repeat (see ``restore_mlx.bench.report``).

    python -m restore_mlx.bench --model llava-ov-0.5b --keep 1,0.5,0.11 --repeats 3

``--reuse-vision`` encodes each model's image once and hands it to every row (RESTORE
through ``prepare_tokens(encoded=...)``, unpatched mlx-vlm through its own
``cached_image_features``); the tower is timed separately once per repeat and that time
is every row's ``vision_s`` and part of its TTFT. The tower is identical code in every
row and most of TTFT on a CPU: its run-to-run noise then no longer swamps what differs
after it, and a run pays one tower pass per repeat instead of one per row.

``--model`` takes a built-in real-shape config (random weights, see
``restore_mlx.bench.configs``), a local path or a hub id (real weights via mlx-vlm).
"""

import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import mlx.core as mx
from mlx_vlm.generate.ar import generate_step
from mlx_vlm.models.cache import make_prompt_cache

from ..config import RestoreConfig
from ..errors import InputError, OneLineParser, check_can_plot, fail
from ..integration import (
    apply,
    cached_image_kwargs,
    encode_image,
    prepare_tokens,
    reads_cls_attention,
    remove,
)
from .configs import BUILTIN, DEFAULT_MODELS
from .profile import profile as profile_stages
from .report import add_ratios, machine, markdown, plot, rows_from_log, summarize
from .subject import Subject, load_subject
from .timing import bias_bytes, fresh_row, kv_bytes, timed_generate

DEFAULT_KEEP = (1.0, 0.75, 0.5, 0.25, 0.11)
DEFAULT_METHODS = ("divprune", "pool")
VARIANTS = ("base", "restore")
# Logged when a model's rows reuse one encoding: --from-log reads the mode back from it.
REUSE_MARK = "vision encoded once, reused by every row; tower timed once per repeat"


@dataclass(frozen=True)
class Reuse:
    """--reuse-vision: the model's image encoded once (``encode_image``) and the tower's
    wall time in the current repeat (timed separately, one call shared by every row)."""

    encoded: object
    vision_s: float = 0.0


def _stderr(*parts):
    print(*parts, file=sys.stderr, flush=True)


def run_unpatched(s: Subject, max_tokens: int, step, reuse=None) -> dict:
    """mlx-vlm alone. vision_s is a separate call of its own embedding step (tower,
    projector, merge); TTFT is the end-to-end ``generate_step`` to the first token.

    With ``reuse``, ``generate_step`` takes the encoded image through mlx-vlm's own
    ``cached_image_features`` (its embedding step then skips the tower) and TTFT is
    that plus the repeat's separately timed tower."""
    remove(s.model)
    ids, pixels, extra = s.split()
    resident = fresh_row()
    if reuse is None:
        t0 = time.perf_counter()
        mx.eval(s.model.get_input_embeddings(ids, pixels, **extra).inputs_embeds)
        vision_s = time.perf_counter() - t0
    else:
        vision_s = reuse.vision_s
        extra = {**extra, **cached_image_kwargs(s.model, reuse.encoded)}
    first, tps, cache = timed_generate(s.model, ids, pixels, extra, max_tokens, step)
    ttft = first if reuse is None else vision_s + first
    # None for caches without keys (linear-attention or convolution state of hybrids)
    s.kv_shape = [
        (c.keys.shape, c.keys.dtype) if getattr(c, "keys", None) is not None else None
        for c in cache
    ]
    return dict(
        vision_s=vision_s, reduce_s=0.0, setup_s=0.0, prefill_s=ttft - vision_s,
        ttft_s=ttft, decode_tps=tps, peak_memory_gb=mx.get_peak_memory() / 1e9,
        peak_extra_gb=mx.get_peak_memory() / 1e9 - resident,
        kv_bytes=kv_bytes(cache, ids.shape[1]), kept_tokens=s.visual_tokens,
        prompt_tokens=ids.shape[1],
    )  # fmt: skip


def run_restore(
    s: Subject, method, keep, variant, max_tokens, step, reuse=None
) -> dict:
    """restore_mlx through its public API: ``apply``, ``prepare_tokens`` (vision,
    reduction, positions and biases), then the same ``generate_step`` call. With
    ``reuse``, ``prepare_tokens`` takes the encoded image and TTFT adds the repeat's
    separately timed tower instead of its own."""
    apply(s.model, method=method, keep=keep, restore=variant == "restore")
    resident = fresh_row()
    t0 = time.perf_counter()
    encoded = reuse.encoded if reuse is not None else None
    prep = prepare_tokens(s.model, s.sample, encoded=encoded)
    prep_s = time.perf_counter() - t0
    vision_s = prep.vision_s if reuse is None else reuse.vision_s
    kwargs = dict(prep.generate_kwargs)
    pixels = kwargs.pop("pixel_values", None)
    first, tps, cache = timed_generate(
        s.model, prep.input_ids, pixels, kwargs, max_tokens, step
    )
    return dict(
        vision_s=vision_s, reduce_s=prep.reduce_s,
        setup_s=prep_s - prep.vision_s - prep.reduce_s, prefill_s=first,
        ttft_s=vision_s + prep_s - prep.vision_s + first, decode_tps=tps,
        peak_memory_gb=mx.get_peak_memory() / 1e9,
        peak_extra_gb=mx.get_peak_memory() / 1e9 - resident,
        kv_bytes=kv_bytes(cache, prep.prompt_tokens),
        kept_tokens=prep.visual_tokens_after, prompt_tokens=prep.prompt_tokens,
        bias_bytes=bias_bytes(prep.prompt, step),
    )  # fmt: skip


def run_reference_decode(s: Subject, length: int, max_tokens: int) -> float:
    """Unpatched decode tok/s with a KV cache of ``length`` tokens (filled with zeros:
    decode cost depends on the cache length, not its content). Compares decode at
    equal context with a reduced prompt of that length."""
    remove(s.model)
    cache = make_prompt_cache(s.model.language_model)
    for c, kv_shape in zip(cache, s.kv_shape):
        if kv_shape is None:  # linear-attention / convolution state: fixed size
            continue
        shape, dtype = kv_shape
        kv = mx.zeros((shape[0], shape[1], length, shape[3]), dtype=dtype)
        c.update_and_fetch(kv, kv)
    mx.eval([c.state for c, kv in zip(cache, s.kv_shape) if kv is not None])
    ids = s.sample["input_ids"][:, -1:]
    stamps = []
    for _ in generate_step(
        ids, s.model, None, None, max_tokens=max_tokens + 1, temperature=0.0,
        prompt_cache=cache,
    ):  # fmt: skip
        stamps.append(time.perf_counter())
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


# keep 1.0 reduces nothing: one measurement stands for every method and variant.
def _plan(keeps, methods):
    jobs = [("none", 1.0, "none")]
    for keep in keeps:
        if keep >= 1.0:
            jobs.append((methods[0], keep, "restore"))
        else:
            jobs += [(m, keep, v) for m in methods for v in VARIANTS]
        jobs.append(("ref", keep, "ref"))
    return jobs


def _encoding_recipe(methods) -> RestoreConfig:
    """A recipe whose ``encode_image`` serves every method: the first that reads
    [CLS] attention, if one does (the encoding then carries it), else any."""
    cls = [m for m in methods if reads_cls_attention(m)]
    return RestoreConfig(method=(cls or list(methods))[0])


def time_tower(s: Subject, recipe: RestoreConfig) -> float:
    """One separately timed pass of the vision tower (its result is dropped)."""
    mx.clear_cache()  # as every row starts
    return encode_image(s.model, s.sample, config=recipe).vision_s


def bench_subject(
    s: Subject, keeps, methods, repeats, max_tokens, step, log=None, reuse_vision=False
):
    """All rows of one model: medians over ``repeats`` interleaved passes."""
    log = log or _stderr
    samples = {}
    jobs = _plan(keeps, methods)
    reuse, recipe = None, _encoding_recipe(methods)
    if reuse_vision:
        reuse = Reuse(encode_image(s.model, s.sample, config=recipe))
        log(f"[{s.name}] {REUSE_MARK}")
    log(f"[{s.name}] warm-up")
    # One patched row (tower, reducer, biases) and the unpatched LM on the prompt's
    # ids without the image: every code path once, one vision pass instead of three
    # (none with --reuse-vision: the encoding above has run the tower).
    run_restore(s, methods[0], min(keeps), "restore", 2, step, reuse)
    remove(s.model)
    ids, _, _ = s.split()
    timed_generate(s.model, ids, None, {}, 2, step)
    for r in range(repeats):
        t_rep = time.perf_counter()
        if reuse is not None:
            reuse = replace(reuse, vision_s=time_tower(s, recipe))
        for method, keep, variant in jobs if r % 2 == 0 else jobs[::-1]:
            key = (method, keep, variant)
            if method == "none":
                out = run_unpatched(s, max_tokens, step, reuse)
            elif method == "ref":
                length = s.prompt_tokens_at(keep)
                out = {"decode_tps": run_reference_decode(s, length, max_tokens)}
            else:
                out = run_restore(s, method, keep, variant, max_tokens, step, reuse)
            # The repeat pairs a row with its base and reference of the same pass.
            out = {"repeat": r, **out}
            samples.setdefault(key, []).append(out)
            # One line per measurement, so a run cut short still leaves its data.
            log(json.dumps({"model": s.name, "job": key, **out}))
        log(f"[{s.name}] repeat {r + 1}/{repeats}: {time.perf_counter() - t_rep:.0f} s")
    return summarize(s.name, s.visual_tokens, samples)


def run(
    models, keeps, methods, repeats, max_tokens, step=2048, log=None, profile=None,
    image_size=None, profile_only=False, reuse_vision=False, images=1,
) -> dict:  # fmt: skip
    """Benchmark every model; returns the JSON document (machine, settings, rows and,
    with ``profile=(method, keep)``, a stage profile of the RESTORE path per model).
    ``reuse_vision``: encode each image once, time the tower apart (module doc).
    ``images``: images per prompt, each reduced on its own within the shared budget."""
    log = log or _stderr

    settings = dict(
        models=list(models), keep=list(keeps), methods=list(methods),
        repeats=repeats, max_tokens=max_tokens, prefill_step_size=step,
        image_size=image_size, reuse_vision=reuse_vision, images=images,
    )  # fmt: skip
    t0, rows, profiles = time.perf_counter(), [], []
    for spec in models:
        s = load_subject(spec, image_size, images)
        log(f"[{s.name}] {s.about}: {s.prompt_tokens} prompt tokens")
        if not profile_only:
            rows += bench_subject(
                s, keeps, methods, repeats, max_tokens, step, log, reuse_vision
            )
        if profile:
            log(f"[{s.name}] profile {profile}")
            profiles.append(profile_stages(s, *profile, repeats=repeats))
        del s
        mx.clear_cache()
    settings["wall_s"] = round(time.perf_counter() - t0, 1)
    doc = dict(machine=machine(), settings=settings, rows=add_ratios(rows))
    if profiles:
        doc["profile"] = profiles
    return doc


def _floats(text):
    return tuple(float(x) for x in text.split(","))


def _profile_spec(text):
    method, keep = text.split(":")
    return method, float(keep)


def configure_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m restore_mlx.bench", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--model",
        nargs="+",
        default=list(DEFAULT_MODELS),
        help=f"built-in configs ({', '.join(sorted(BUILTIN))}; random weights), "
        f"local folders or hub ids (default: {' '.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--keep",
        type=_floats,
        default=",".join(map(str, DEFAULT_KEEP)),  # argparse parses it: shown as typed
        help="comma-separated kept fractions of the visual tokens",
    )
    p.add_argument(
        "--methods",
        type=lambda t: tuple(t.split(",")),
        default=",".join(DEFAULT_METHODS),
        help="comma-separated base reducers, each run alone and with RESTORE",
    )
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed passes")
    p.add_argument("--max-tokens", type=int, default=8, help="decoded tokens per run")
    p.add_argument(
        "--prefill-step-size",
        type=int,
        default=2048,
        help="tokens per prefill chunk, as mlx-vlm's flag of that name",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="built-ins: image side in pixels (default: the config's own)",
    )
    p.add_argument(
        "--images",
        type=int,
        default=1,
        help="images in the one prompt (built-ins: copies of the shape with their own "
        "pixels; checkpoints: noise images)",
    )
    p.add_argument(
        "--reuse-vision",
        action="store_true",
        help="encode each image once for every row; time the tower apart once per "
        "repeat and add it to TTFT (its noise then cannot swamp a 3%% difference)",
    )
    p.add_argument(
        "--profile",
        type=_profile_spec,
        default=None,
        metavar="METHOD:KEEP",
        help="also time the RESTORE path stage by stage, e.g. divprune:0.25 "
        "(default: no profile)",
    )
    p.add_argument("--profile-only", action="store_true", help="skip the table rows")
    p.add_argument(
        "--from-log",
        type=Path,
        default=None,
        help="rebuild the report from a run's log instead of measuring "
        "(default: measure)",
    )
    p.add_argument(
        "--json", type=Path, default=None, help="write the rows here (default: none)"
    )
    p.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="write the table here (default: printed only)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        help="TTFT/memory PNG here; needs matplotlib (default: no plot)",
    )
    return p


def main(argv=None):
    parser = configure_parser()
    args = parser.parse_args(argv)
    try:
        check_can_plot(args.plot)  # before the minutes of measuring, not after
        if args.images < 1:
            raise InputError(f"--images must be at least 1, got {args.images}")
    except InputError as e:
        fail(e, prog=parser.prog)
    if args.from_log:
        lines = args.from_log.read_text().splitlines()
        rows = add_ratios(rows_from_log(lines))
        settings = dict(vars(args), keep=list(args.keep), methods=list(args.methods))
        settings = {k: v for k, v in settings.items() if not isinstance(v, Path)}
        settings["prefill_step_size"] = args.prefill_step_size
        # How the logged run measured vision, whatever this command line says.
        settings["reuse_vision"] = any(REUSE_MARK in ln for ln in lines)
        # The timed passes' wall time, from the log's "repeat i/n: X s" lines.
        reps = [ln.rsplit(": ", 1)[1] for ln in lines if "] repeat " in ln]
        settings["wall_s"] = sum(float(r.split()[0]) for r in reps)
        doc = dict(machine=machine(), settings=settings, rows=rows)
    else:
        try:
            doc = run(
                args.model, args.keep, args.methods, args.repeats, args.max_tokens,
                args.prefill_step_size, profile=args.profile,
                image_size=args.image_size, profile_only=args.profile_only,
                reuse_vision=args.reuse_vision, images=args.images,
            )  # fmt: skip
        except InputError as e:  # e.g. --images on a built-in that measures one
            fail(e, prog=parser.prog)
    doc["settings"]["command"] = "python -m restore_mlx.bench " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    text = markdown(doc)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.plot:
        plot(doc, args.plot)


if __name__ == "__main__":
    main()
