"""Accuracy and fidelity of visual token reduction: ``python -m restore_mlx.eval``.

For every question, the unreduced model is prefilled once (method "none"), then every
method x variant x kept fraction: accuracy per question family, the share of attention
the answer position pays to visual tokens, and the cosine similarity of the final
hidden state and KL of the next-token distribution against the unreduced prefill.

    python -m restore_mlx.eval --model examples/probe-model --samples 25 \\
        --json examples/probe-results/results.json

The default grid is 11 methods x 6 variants x 4 budgets + the unreduced model (265
prefills per question; with the first 5 variants, 221 took ~2.3 s per question on a
shared 2-core CPU): each image goes through the vision tower once per question, not
once per configuration. Variant "flat-distance" equals "restore" on 1-D RoPE models;
leave it out there with ``--variants``.

Questions come from the spatial probe's generator (fresh test scenes for ``--seed``) or,
with ``--data``, from a benchmark JSONL (image, question, answer per line; POPE or
GQA-style field names), so real checkpoints can be evaluated the same way.
With ``--max-tokens 1`` (default) the answer is the argmax of the prefill's next-token
distribution, which scores single-word answers (probe, POPE yes/no); more tokens use
greedy generation from the same reduced prompt.
"""

import sys
import time
from pathlib import Path

from ..adapters.processors import load
from ..config import RestoreConfig
from ..core.api import REDUCERS
from ..errors import (
    InputError,
    OneLineParser,
    UnsupportedMethod,
    check_can_plot,
    check_output,
    fail,
    write_json_atomic,
)
from ..integration import (
    apply,
    encode_image,
    inspect_prefill,
    prepare_tokens,
    reads_cls_attention,
    tokenize_prompt,
)
from ..presets import VARIANTS
from .probe.data import probe_items, read_jsonl
from .probe.metrics import aggregate, cosine, is_correct, kl_divergence
from .probe.report import markdown, plot

DEFAULT_KEEPS = (0.75, 0.5, 0.25, 0.11)


def _predict(model, processor, prepared, trace, item, prompt, max_tokens):
    """The predicted answer text and whether the token limit cut it."""
    import mlx.core as mx

    tok = getattr(processor, "tokenizer", processor)
    if max_tokens == 1:
        return tok.decode([int(mx.argmax(trace.logits[0]).item())]), True
    from mlx_vlm import generate

    kwargs = {**prepared.generate_kwargs, "input_ids": prepared.input_ids}
    out = generate(
        model, processor, prompt, [item["image"]], max_tokens=max_tokens,
        temperature=0.0, verbose=False, **kwargs,
    )  # fmt: skip
    return out.text, out.generation_tokens >= max_tokens


def _record(item, trace, full, prepared, pred, truncated, **labels):
    return dict(
        labels,
        family=item["family"],
        correct=is_correct(pred, item["answer"], truncated),
        visual_attention=float(trace.visual_attention[0].item()),
        visual_attention_full=float(full.visual_attention[0].item()),
        cosine=cosine(trace.hidden, full.hidden),
        kl=kl_divergence(full.logits, trace.logits),
        visual_tokens=prepared.visual_tokens_after,
        prompt_tokens=prepared.prompt_tokens,
    )


def evaluate(model, processor, items, methods, keeps, variants=tuple(VARIANTS), *,
             max_tokens=1, progress=True) -> list:  # fmt: skip
    """Per-question records for the unreduced model and every configuration.

    A configuration whose reducer cannot run on this model (missing scores, unsupported
    architecture) gives records with ``skipped`` set to the reason, not an error.
    """
    from mlx_vlm.prompt_utils import apply_chat_template

    apply(model, method=methods[0], keep=1.0)
    configs = [(m, v, k) for m in methods for v in variants for k in keeps]
    skipped, records, bar = {}, [], _Progress(len(items), progress)
    for item in items:
        prompt = apply_chat_template(
            processor, model.config, item["question"], num_images=1
        )
        sample = tokenize_prompt(model, processor, prompt, [item["image"]])
        # One tower pass per question (and per [CLS] need), not one per configuration.
        encodings = _Encodings(model, sample, encode_image)
        full_cfg = RestoreConfig(method=methods[0], keep=1.0)
        full_prep = prepare_tokens(
            model, sample, config=full_cfg, encoded=encodings.get(full_cfg)
        )
        full = inspect_prefill(model, full_prep)
        pred, cut = _predict(
            model, processor, full_prep, full, item, prompt, max_tokens
        )
        records.append(
            _record(
                item,
                full,
                full,
                full_prep,
                pred,
                cut,
                method="none",
                variant="base",
                keep=1.0,
            )
        )
        for m, v, k in configs:
            labels = dict(method=m, variant=v, keep=k)
            if (m, v, k) in skipped:
                records.append(
                    dict(labels, family=item["family"], skipped=skipped[(m, v, k)])
                )
                continue
            try:
                cfg = RestoreConfig(method=m, keep=k, **VARIANTS[v])
                prep = prepare_tokens(
                    model, sample, config=cfg, encoded=encodings.get(cfg)
                )
                trace = inspect_prefill(model, prep)
            except UnsupportedMethod as e:  # e.g. a score this model cannot provide
                skipped[(m, v, k)] = str(e)
                records.append(dict(labels, family=item["family"], skipped=str(e)))
                continue
            pred, cut = _predict(
                model, processor, prep, trace, item, prompt, max_tokens
            )
            records.append(_record(item, trace, full, prep, pred, cut, **labels))
        bar.step()
    bar.done()
    return records


class _Encodings:
    """The image of one question encoded lazily, once per [CLS] need: methods that
    read the tower's [CLS] attention get it computed for them, all others share one."""

    def __init__(self, model, sample, encode):
        self.model, self.sample, self.encode, self.cache = model, sample, encode, {}

    def get(self, cfg):
        key = cfg.method if reads_cls_attention(cfg.method) else None
        if key not in self.cache:
            self.cache[key] = self.encode(self.model, self.sample, config=cfg)
        return self.cache[key]


class _Progress:
    """A one-line progress bar on stderr with an ETA."""

    def __init__(self, total, on=True):
        self.total, self.on, self.n, self.t0 = total, on, 0, time.perf_counter()

    def step(self):
        self.n += 1
        if not self.on:
            return
        spent = time.perf_counter() - self.t0
        eta = spent / self.n * (self.total - self.n)
        filled = int(30 * self.n / self.total)
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.n}/{self.total} questions "
            f"{spent:.0f}s elapsed, ~{eta:.0f}s left"
        )
        sys.stderr.flush()

    def done(self):
        if self.on:
            sys.stderr.write("\n")


def load_items(args) -> tuple:
    """The questions and a short description of where they came from."""
    if args.data is not None:
        return read_jsonl(args.data, args.image_root, args.samples), str(args.data)
    return probe_items(args.seed, args.samples), f"probe test set, seed {args.seed}"


def run(args) -> dict:
    """Load, evaluate, write the outputs the flags ask for; return the JSON document."""
    items, source = load_items(args)
    model, processor = load(args.model)
    t0 = time.perf_counter()
    records = evaluate(
        model, processor, items, args.methods, args.keep, args.variants,
        max_tokens=args.max_tokens, progress=not args.quiet,
    )  # fmt: skip
    rows = aggregate(records)
    n_visual = max((r.get("visual_tokens") or 0) for r in rows if r["method"] == "none")
    meta = {
        "model": str(args.model), "source": source, "seed": args.seed,
        "questions": len(items), "visual_tokens": int(n_visual),
        "methods": list(args.methods), "variants": list(args.variants),
        "keeps": list(args.keep), "max_tokens": args.max_tokens,
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    doc = {"meta": meta, "rows": rows}
    text = markdown(rows, meta)
    if args.json:
        write_json_atomic(args.json, doc)
    md_path = args.markdown or (_sibling(args.json, ".md") if args.json else None)
    if md_path:
        with open(md_path, "w") as f:
            f.write(text + "\n")
    if args.plot:  # only when asked for: matplotlib is an optional dependency
        plot(rows, args.plot, n_visual, f"{args.model}: {source}")
    print(text)
    return doc


def _sibling(path, suffix):
    return str(Path(path).with_suffix(suffix))


def configure_parser():
    p = OneLineParser(
        prog="python -m restore_mlx.eval",
        description=__doc__.splitlines()[0].split(":")[0] + ".",
    )
    p.add_argument("--model", required=True, help="mlx-vlm checkpoint folder or hub id")
    p.add_argument(
        "--data", default=None, help="benchmark JSONL (default: probe questions)"
    )
    p.add_argument(
        "--image-root",
        default=None,
        help="folder for --data image paths (default: the JSONL's folder)",
    )
    p.add_argument("--seed", type=int, default=0, help="probe test-set seed")
    p.add_argument(
        "--samples", type=int, default=25,
        help="probe: questions per family; --data: at most this many questions",
    )  # fmt: skip
    p.add_argument(
        "--keep",
        type=float,
        nargs="+",
        default=list(DEFAULT_KEEPS),
        help="kept fractions of the visual tokens, each in (0, 1) "
        f"(default: {' '.join(map(str, DEFAULT_KEEPS))})",
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=list(REDUCERS),
        choices=list(REDUCERS),
        metavar="METHOD",
        help=f"base reducers to evaluate, from: {', '.join(REDUCERS)} (default: all)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=list(VARIANTS),
        metavar="VARIANT",
        help=f"RESTORE variants of each reducer, from: {', '.join(VARIANTS)} "
        "(default: all)",
    )
    p.add_argument("--max-tokens", type=int, default=1, help="answer length limit")
    p.add_argument(
        "--json",
        default=None,
        help="write rows here, and the markdown table next to it (default: none)",
    )
    p.add_argument(
        "--markdown",
        default=None,
        help="markdown path (default: next to --json, else not written)",
    )
    p.add_argument(
        "--plot",
        default=None,
        help="draw accuracy vs kept tokens into this PNG; needs matplotlib "
        "(default: no plot)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def check_args(args) -> None:
    """InputError for flag values that cannot work, before the model loads."""
    if args.samples < 1:
        raise InputError(f"--samples must be at least 1, got {args.samples}")
    if args.max_tokens < 1:
        raise InputError(f"--max-tokens must be at least 1, got {args.max_tokens}")
    for k in args.keep:
        if not 0.0 < k < 1.0:
            raise InputError(f"--keep fractions must be in (0, 1), got {k}")
    for path, flag in (
        (args.json, "--json"),
        (args.markdown, "--markdown"),
        (args.plot, "--plot"),
    ):
        check_output(path, flag)
    check_can_plot(args.plot)


def main(argv=None):
    parser = configure_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        run(args)
    except ValueError as e:  # InputError included: bad flags, files or model
        fail(e, prog=parser.prog)


if __name__ == "__main__":
    main()
