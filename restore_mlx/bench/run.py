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

This module holds ``run`` (every model, one JSON document) and the command line; the
measuring loop of one model is ``restore_mlx.bench.rows``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import mlx.core as mx

from ..config import BUDGET_POLICIES
from ..errors import InputError, OneLineParser, check_can_plot, fail
from .configs import BUILTIN, DEFAULT_MODELS
from .profile import profile as profile_stages
from .report import add_ratios, machine, markdown, plot, rows_from_log
from .rows import REUSE_MARK, Reuse, _stderr, bench_subject, run_restore, run_unpatched
from .subject import load_subject

# Re-exported: the tests measure single rows through this module.
__all__ = ["Reuse", "run_restore", "run_unpatched"]

DEFAULT_KEEP = (1.0, 0.75, 0.5, 0.25, 0.11)
DEFAULT_METHODS = ("divprune", "pool")


def run(
    models, keeps, methods, repeats, max_tokens, step=2048, log=None, profile=None,
    image_size=None, profile_only=False, reuse_vision=False, images=1,
    budget_policy="proportional",
) -> dict:  # fmt: skip
    """Benchmark every model; returns the JSON document (machine, settings, rows and,
    with ``profile=(method, keep)``, a stage profile of the RESTORE path per model).
    ``reuse_vision``: encode each image once, time the tower apart (module doc).
    ``images``: images per prompt, each reduced on its own within the shared budget,
    shared as ``budget_policy`` says (``RestoreConfig``)."""
    log = log or _stderr

    settings = dict(
        models=list(models), keep=list(keeps), methods=list(methods),
        repeats=repeats, max_tokens=max_tokens, prefill_step_size=step,
        image_size=image_size, reuse_vision=reuse_vision, images=images,
        budget_policy=budget_policy,
    )  # fmt: skip
    t0, rows, profiles = time.perf_counter(), [], []
    for spec in models:
        s = load_subject(spec, image_size, images)
        log(f"[{s.name}] {s.about}: {s.prompt_tokens} prompt tokens")
        if not profile_only:
            rows += bench_subject(
                s, keeps, methods, repeats, max_tokens, step, log, reuse_vision,
                budget_policy,
            )  # fmt: skip
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
    """``METHOD:KEEP`` -> (method, keep); argparse shows the error's own words."""
    try:
        method, keep = text.split(":")
        return method, float(keep)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected METHOD:KEEP (e.g. divprune:0.5), got {text!r}"
        ) from None


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
        "--budget-policy",
        choices=BUDGET_POLICIES,
        default="proportional",
        help="how several images share the budget, as generate's flag (default: "
        "proportional)",
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
                budget_policy=args.budget_policy,
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
