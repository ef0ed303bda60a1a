"""Ratios, target checks, the markdown table and the plot of ``restore_mlx.bench``.

Targets, each checked per reduced row of a model:

- prefill: LM prefill at kept fraction r within 10% of the unreduced prefill (the
  keep-1.0 row, measured the same way) scaled by the prompt length (text + kept tokens
  over text + all tokens), except the last prompt token's single-token forward, which
  mlx-vlm's generate_step always runs alone (one decode step: a fixed part);
- RESTORE adds at most 3% to TTFT over its base reducer at the same budget, counted
  after the vision tower (identical code in both; its noise would swamp 3% here):
  ``restore_overhead`` = (TTFT - vision) difference over the base TTFT;
- decode with calibration at least 97% of the same reduction without it, and not below
  unpatched mlx-vlm decoding from a cache of the same length (``decode_tps_ref``;
  within the same 3% noise allowance);
- KV-cache bytes per prompt token equal to unpatched mlx-vlm's (proportional to text +
  kept tokens).

The base and RESTORE rows of one (method, keep), and the reference decode of that keep,
run back to back within every repeat, so the comparisons between them are paired:
``ttft_vs_base``, ``restore_overhead``, ``decode_vs_base`` and ``decode_vs_ref`` are the
median over repeats of the ratio within each repeat (repeat r against repeat r), not a
ratio of medians: drift of a shared machine between repeats hits both sides of a pair
alike and cancels. Each row keeps its per-repeat values in ``samples``. The other
columns are medians over repeats; ``*_x`` divide them by the unpatched row's.
"""

import json
import platform
import statistics
from pathlib import Path

import mlx.core as mx

PREFILL_SLACK, TTFT_SLACK, DECODE_FLOOR = 1.10, 1.03, 0.97
METRICS = (
    "vision_s", "reduce_s", "setup_s", "prefill_s", "ttft_s", "decode_tps",
    "decode_tps_ref", "peak_memory_gb", "peak_extra_gb", "kv_bytes", "bias_bytes",
)  # fmt: skip
# Per-repeat values a row keeps (``samples``), for the paired ratios.
SAMPLED = ("vision_s", "prefill_s", "ttft_s", "decode_tps")
# At keep 1.0 nothing is reduced: every method and variant runs the same path (the
# patched model passing straight through to mlx-vlm), so it is measured once.
SHARED_NOTE = "keep 1.0: nothing reduced; the same path for every method and variant"


def rows_from_log(lines) -> list:
    """Rows rebuilt from the per-measurement JSON lines a run logs (a run cut short)."""
    per_model = {}
    for line in lines:
        if line.startswith("{"):
            m = json.loads(line)
            key = tuple(m.pop("job"))
            per_model.setdefault(m.pop("model"), {}).setdefault(key, []).append(m)
    rows = []
    for name, samples in per_model.items():
        n = samples[("none", 1.0, "none")][0]["kept_tokens"]
        rows += summarize(name, n, samples)
    return rows


def summarize(name: str, visual_tokens: int, samples) -> list:
    """One row per (method, keep, variant) of ``samples`` (lists of measurements):
    medians, with the equal-context reference decode of the same keep."""
    refs = {k[1]: v for k, v in samples.items() if k[0] == "ref"}
    rows = []
    for (method, keep, variant), outs in samples.items():
        if method == "ref":
            continue
        row = dict(model=name, method=method, variant=variant, keep=keep)
        if method != "none" and keep >= 1.0:
            row["note"] = SHARED_NOTE
        row["visual_tokens"] = visual_tokens
        for k in ("kept_tokens", "prompt_tokens"):
            row[k] = outs[0][k]
        for k in METRICS:
            src = refs.get(keep, []) if k == "decode_tps_ref" else outs
            key = "decode_tps" if k == "decode_tps_ref" else k
            vals = [o[key] for o in src if key in o]
            row[k] = statistics.median(vals) if vals else None
        row["samples"] = _per_repeat(outs, refs.get(keep, []))
        rows.append(row)
    return rows


def _repeat_of(i, out):
    # Runs log their repeat; a hand-built list is in repeat order.
    return out.get("repeat", i)


def _per_repeat(outs, refs) -> dict:
    """A row's measurements as lists in repeat order (``repeat`` names them), with
    the reference decode of the same repeat (None where it has none)."""
    ref = {_repeat_of(i, o): o.get("decode_tps") for i, o in enumerate(refs)}
    repeats = [_repeat_of(i, o) for i, o in enumerate(outs)]
    samples = {"repeat": repeats}
    samples.update({k: [o.get(k) for o in outs] for k in SAMPLED})
    samples["decode_tps_ref"] = [ref.get(r) for r in repeats]
    return samples


def _by_repeat(row) -> dict:
    """{repeat: {metric: value}} from a row's ``samples``."""
    s = row["samples"]
    keys = [k for k in s if k != "repeat"]
    return {r: {k: s[k][i] for k in keys} for i, r in enumerate(s["repeat"])}


def _paired(row, other, fn):
    """Median over the repeats both rows measured of ``fn(row's, other's)`` values
    of that repeat (None when no repeat pairs or ``fn`` gives None for all)."""
    mine, theirs = _by_repeat(row), _by_repeat(other)
    vals = [fn(mine[r], theirs[r]) for r in mine if r in theirs]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _ratio(key):
    return lambda a, b: _div(a[key], b[key])


def _vs_ref(a, _):
    return _div(a["decode_tps"], a["decode_tps_ref"])


def _after_vision(a, b):
    """RESTORE's TTFT overhead in one repeat: what differs after the tower, over the
    base TTFT."""
    if None in (a["ttft_s"], a["vision_s"], b["ttft_s"], b["vision_s"]):
        return None
    after = a["ttft_s"] - a["vision_s"] - (b["ttft_s"] - b["vision_s"])
    return _div(after, b["ttft_s"])


def machine() -> dict:
    """Where the numbers were measured."""
    import os

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if "model name" in ln)
    except (OSError, StopIteration):
        pass
    return dict(
        cpu=cpu, cores=os.cpu_count(), platform=platform.platform(),
        mlx=mx.__version__, device=str(mx.default_device()),
        preload=os.environ.get("LD_PRELOAD", ""),
    )  # fmt: skip


def _div(a, b):
    return a / b if a is not None and b else None


def add_ratios(rows: list) -> list:
    """Add ratio columns (``*_x`` vs unpatched, ``*_vs_base``) to every row in place."""
    none = {r["model"]: r for r in rows if r["method"] == "none"}
    # The unreduced prefill, measured like the reduced ones (cached features, then
    # generate_step); the unpatched row's prefill is TTFT minus a separate vision call.
    full = {r["model"]: r for r in rows if r["method"] != "none" and r["keep"] >= 1.0}
    base = {
        (r["model"], r["method"], r["keep"]): r for r in rows if r["variant"] == "base"
    }
    for r in rows:
        u = none[r["model"]]
        for k in ("vision_s", "prefill_s", "ttft_s", "decode_tps", "peak_memory_gb"):
            r[k.rsplit("_", 1)[0] + "_x"] = _div(r[k], u[k])
        r["peak_extra_x"] = _div(r.get("peak_extra_gb"), u.get("peak_extra_gb"))
        r["kv_x"] = _div(r["kv_bytes"], u["kv_bytes"])
        f = full.get(r["model"], u)
        r["prefill_vs_linear"] = _div(
            r["prefill_s"], f["prefill_s"] * r["prompt_tokens"] / f["prompt_tokens"]
        )
        # generate_step prefills P - 1 tokens, then runs the last one alone: that
        # single-token forward (one decode step) is a fixed part of every prefill.
        step = 1.0 / f["decode_tps"] if f.get("decode_tps") else 0.0
        share = (r["prompt_tokens"] - 1) / (f["prompt_tokens"] - 1)
        r["prefill_vs_proportional"] = _div(
            r["prefill_s"], step + (f["prefill_s"] - step) * share
        )
        r["kv_per_token_x"] = _div(
            r["kv_bytes"] / r["prompt_tokens"], u["kv_bytes"] / u["prompt_tokens"]
        )
        # The reference decode of this keep ran in the same repeat as this row.
        r["decode_vs_ref"] = _paired(r, r, _vs_ref)
        b = base.get((r["model"], r["method"], r["keep"]))
        if r["variant"] == "restore" and b is not None:
            r["ttft_vs_base"] = _paired(r, b, _ratio("ttft_s"))
            # Both variants run the same vision code, whose run-to-run noise swamps a
            # 3% budget on a shared CPU: the overhead is what differs after it.
            r["restore_overhead"] = _paired(r, b, _after_vision)
            r["decode_vs_base"] = _paired(r, b, _ratio("decode_tps"))
    return rows


def targets(rows: list) -> list:
    """[(target, met, total, misses)] over the reduced rows (kept fraction < 1)."""
    red = [r for r in rows if r["method"] != "none" and r["keep"] < 1.0]
    res = [r for r in red if r["variant"] == "restore"]
    checks = [
        ("prefill <= 1.10 x proportional", red, "prefill_vs_proportional", PREFILL_SLACK, 1),
        ("RESTORE adds <= 3% to base TTFT (after vision)", res, "restore_overhead", TTFT_SLACK - 1, 1),
        ("RESTORE decode >= 0.97 x base", res, "decode_vs_base", DECODE_FLOOR, -1),
        ("decode >= 0.97 x unpatched, equal context", red, "decode_vs_ref", DECODE_FLOOR, -1),
        ("KV bytes/token = unpatched", red, "kv_per_token_x", 1.0, 0),
    ]  # fmt: skip
    out = []
    for name, subset, key, bound, sign in checks:
        vals = [(r, r.get(key)) for r in subset if r.get(key) is not None]
        if sign == 0:
            ok = [abs(v - bound) < 1e-9 for _, v in vals]
        else:
            ok = [(v - bound) * sign <= 0 for _, v in vals]
        misses = [
            f"{r['model']} {r['method']}/{r['variant']} keep {r['keep']}: {v:.3f}"
            for (r, v), good in zip(vals, ok)
            if not good
        ]
        out.append((name, sum(ok), len(ok), misses))
    return out


def _f(v, fmt):
    return "-" if v is None else format(v, fmt)


COLUMNS = (
    ("keep", "keep", ".2f"), ("method", "method", ""), ("variant", "variant", ""),
    ("kept", "kept_tokens", "d"), ("prompt", "prompt_tokens", "d"),
    ("vision s", "vision_s", ".2f"), ("reduce s", "reduce_s", ".3f"),
    ("setup s", "setup_s", ".3f"), ("prefill s", "prefill_s", ".2f"),
    ("TTFT s", "ttft_s", ".2f"), ("TTFT x", "ttft_x", ".2f"),
    ("prefill x", "prefill_x", ".2f"), ("prefill/prop", "prefill_vs_proportional", ".2f"),
    ("TTFT/base", "ttft_vs_base", ".3f"), ("+TTFT/base", "restore_overhead", "+.3f"), ("decode tok/s", "decode_tps", ".2f"),
    ("decode/base", "decode_vs_base", ".2f"), ("decode/ref", "decode_vs_ref", ".2f"),
    ("peak GB", "peak_memory_gb", ".2f"), ("+peak GB", "peak_extra_gb", ".3f"), ("KV MB", "kv_bytes", ""), ("KV x", "kv_x", ".2f"),
    ("bias MB", "bias_bytes", ""),
)  # fmt: skip


def _cell(row, key, fmt):
    v = row.get(key)
    if key in ("kv_bytes", "bias_bytes"):
        return _f(v / 2**20 if v is not None else None, ".1f")
    return str(v) if fmt == "" else _f(v, fmt)


def _policy(settings) -> str:
    """The budget policy, named only where it is not the default one."""
    policy = settings.get("budget_policy", "proportional")
    return "" if policy == "proportional" else f" ({policy} budget)"


def markdown(doc: dict) -> str:
    """The results as markdown: machine, settings, one table per model, targets."""
    m, s = doc["machine"], doc["settings"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, mlx {m['mlx']} ({m['device']}), "
        f"LD_PRELOAD={m['preload'] or 'none'}.",
        f"Settings: keep {s['keep']}, methods {s['methods']}, {s['repeats']} repeats "
        "(medians; RESTORE vs base and decode vs ref: medians of per-repeat paired "
        f"ratios), {s['max_tokens']} decoded tokens, prefill step "
        f"{s['prefill_step_size']}; {s.get('images', 1)} image(s) per prompt"
        f"{_policy(s)}; "
        f"wall {s.get('wall_s', '?')} s.",
    ]
    if s.get("reuse_vision"):
        lines.append(
            "Vision (--reuse-vision): each model's image was encoded once and reused "
            "by every row (restore_mlx.encode_image; mlx-vlm's own "
            "cached_image_features for the unpatched row). The tower was timed "
            "separately, once per repeat, one call shared by every row of that "
            "repeat: vision s is that time, and TTFT = vision s + reduction, setup "
            "and LM prefill to the first token. Peak memory excludes the tower."
        )
    if s.get("command"):
        lines.append(f"Command: `{s['command']}`")
    for model in dict.fromkeys(r["model"] for r in doc["rows"]):
        rows = [r for r in doc["rows"] if r["model"] == model]
        rows.sort(
            key=lambda r: (-r["keep"], r["method"] != "none", r["method"], r["variant"])
        )
        lines += ["", f"### {model}", ""]
        lines.append("| " + " | ".join(c[0] for c in COLUMNS) + " |")
        lines.append("|" + "---|" * len(COLUMNS))
        for r in rows:
            lines.append(
                "| " + " | ".join(_cell(r, k, f) for _, k, f in COLUMNS) + " |"
            )
    lines += ["", "Targets (reduced rows, keep < 1):", ""]
    for name, met, total, misses in targets(doc["rows"]):
        lines.append(
            f"- {name}: {met}/{total} met"
            + (f"; missed: {'; '.join(misses)}" if misses else "")
        )
    lines += _profile_lines(doc.get("profile", []))
    return "\n".join(lines) + "\n"


def _profile_lines(profiles):
    """The stage profile as a table: one column per profiled model."""
    if not profiles:
        return []
    keys = [k for k in profiles[0] if k.endswith("_s")]
    head = [f"{p['model']} {p['method']} keep {p['keep']}" for p in profiles]
    lines = ["", "Profile of one request (ms, medians):", ""]
    lines.append("| stage | " + " | ".join(head) + " |")
    lines.append("|---|" + "---|" * len(profiles))
    for k in keys:
        cells = [
            _f(p.get(k) * 1e3 if p.get(k) is not None else None, ".1f")
            for p in profiles
        ]
        lines.append(f"| {k[:-2]} | " + " | ".join(cells) + " |")
    return lines


def plot(doc: dict, path) -> Path:
    """TTFT, peak memory and KV bytes vs kept visual tokens, one row of panels per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in doc["rows"]))
    panels = (
        ("ttft_s", "TTFT (s)"),
        ("peak_extra_gb", "peak memory above weights (GB)"),
        ("kv_bytes", "KV cache (MB)"),
    )
    fig, axes = plt.subplots(
        len(models), 3, figsize=(13, 3.6 * len(models)), squeeze=False
    )
    for row_axes, model in zip(axes, models):
        rows = [r for r in doc["rows"] if r["model"] == model]
        none = next(r for r in rows if r["method"] == "none")
        reduced = [r for r in rows if r["method"] != "none" and r["keep"] < 1.0]
        lines = sorted({(r["method"], r["variant"]) for r in reduced})
        for ax, (key, label) in zip(row_axes, panels):
            scale = 2**-20 if key == "kv_bytes" else 1.0
            for method, variant in lines:
                # The shared keep-1.0 row (nothing reduced) starts every line.
                pts = sorted({(r["kept_tokens"], r[key] * scale) for r in rows
                              if (r["method"], r["variant"]) == (method, variant)
                              or (r["method"] != "none" and r["keep"] >= 1.0)})  # fmt: skip
                style = "-" if variant == "restore" else "--"
                ax.plot(
                    *zip(*pts), style, marker="o", ms=3, label=f"{method} {variant}"
                )
            ax.plot(
                [none["kept_tokens"]], [none[key] * scale], "k*", ms=10, label="mlx-vlm"
            )
            ax.set_ylim(bottom=0)  # ratios read honestly only from zero
            ax.set_xlabel("kept visual tokens")
            ax.set_ylabel(label)
            ax.set_title(model, fontsize=9)
            ax.grid(alpha=0.3)
        row_axes[0].legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
