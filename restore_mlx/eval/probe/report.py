"""Markdown tables and the accuracy plot of an eval run (``metrics.aggregate`` rows)."""

from collections import defaultdict

VARIANT_ORDER = (
    "base", "restore", "positions", "calibration", "anchors", "flat-distance",
)  # fmt: skip


def _fmt(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"


def _grid(rows, family, measure):
    """{(method, variant): {keep: value}} for one family and measure."""
    out = defaultdict(dict)
    for r in rows:
        if r["family"] == family and r["method"] != "none":
            out[(r["method"], r["variant"])][r["keep"]] = r.get(measure)
    return out


def _table(rows, family, measure, keeps, title, digits=3) -> list:
    grid = _grid(rows, family, measure)
    head = "| method | variant | " + " | ".join(f"keep {k:g}" for k in keeps) + " |"
    lines = [f"**{title}**", "", head, "|" + "---|" * (len(keeps) + 2)]
    full = [r for r in rows if r["method"] == "none" and r["family"] == family]
    if full:
        v = _fmt(full[0].get(measure), digits)
        lines.append("| none (full) | - | " + " | ".join(v for _ in keeps) + " |")
    for (method, variant), by_keep in sorted(
        grid.items(), key=lambda kv: (kv[0][0], VARIANT_ORDER.index(kv[0][1]))
    ):
        cells = [_fmt(by_keep.get(k), digits) for k in keeps]
        lines.append(f"| {method} | {variant} | " + " | ".join(cells) + " |")
    return lines + [""]


def _family_table(rows, keeps, families) -> list:
    """Accuracy per family and variant, averaged over the evaluated methods."""
    acc = defaultdict(list)
    for r in rows:
        if r["method"] != "none" and r.get("accuracy") is not None:
            acc[(r["family"], r["variant"], r["keep"])].append(r["accuracy"])
    full = {r["family"]: r["accuracy"] for r in rows if r["method"] == "none"}
    head = (
        "| family | variant | full | " + " | ".join(f"keep {k:g}" for k in keeps) + " |"
    )
    lines = ["**Accuracy per family, mean over methods**", "", head]
    lines.append("|" + "---|" * (len(keeps) + 3))
    for fam in families:
        for var in VARIANT_ORDER:
            vals = [acc.get((fam, var, k)) for k in keeps]
            if not any(vals):
                continue
            cells = [_fmt(sum(v) / len(v)) if v else "-" for v in vals]
            lines.append(
                f"| {fam} | {var} | {_fmt(full.get(fam))} | " + " | ".join(cells) + " |"
            )
    return lines + [""]


def _mean_se(values) -> str:
    """``mean ± one standard error`` of ``values`` (over methods)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return _fmt(mean)
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return f"{mean:.3f} ± {(var / n) ** 0.5:.3f}"


def _means_table(rows, keeps) -> list:
    """Accuracy (all families) per variant: the mean over methods ± one standard error
    (over methods), and for how many methods the variant beats / ties its base."""
    grid = _grid(rows, "all", "accuracy")
    variants = [v for v in VARIANT_ORDER if any(var == v for _, var in grid)]
    head = "| variant | " + " | ".join(f"keep {k:g}" for k in keeps) + " |"
    lines = [
        "**Accuracy (all families), mean over methods ± one standard error; "
        "methods better / tied against their base**",
        "",
        head,
        "|" + "---|" * (len(keeps) + 1),
    ]
    for var in variants:
        cells = []
        for k in keeps:
            pairs = [
                (by_keep[k], grid.get((m, "base"), {}).get(k))
                for (m, v), by_keep in grid.items()
                if v == var and by_keep.get(k) is not None
            ]
            if not pairs:
                cells.append("-")
                continue
            cell = _mean_se([a for a, _ in pairs])
            if var != "base":
                known = [(a, b) for a, b in pairs if b is not None]
                better = sum(a > b for a, b in known)
                tied = sum(a == b for a, b in known)
                cell += f" ({better}/{tied} of {len(known)})"
            cells.append(cell)
        lines.append(f"| {var} | " + " | ".join(cells) + " |")
    return lines + [""]


def markdown(rows, meta) -> str:
    """The run as markdown: accuracy and fidelity tables, per-family summary, skips."""
    keeps = sorted({r["keep"] for r in rows if r["method"] != "none"}, reverse=True)
    families = [f for f in dict.fromkeys(r["family"] for r in rows) if f != "all"] + [
        "all"
    ]
    lines = [f"# Eval: {meta.get('model', '?')}", ""]
    lines.append(
        f"{meta.get('questions', '?')} questions ({meta.get('source', '?')}), "
        f"{meta.get('visual_tokens', '?')} visual tokens per image, "
        f"seed {meta.get('seed')}."
    )
    lines += ["", *_means_table(rows, keeps)]
    lines += _table(rows, "all", "accuracy", keeps, "Accuracy (all families)")
    lines += _family_table(rows, keeps, families)
    for measure, title in (
        ("cosine", "Cosine similarity of the final hidden state to the full model"),
        ("kl", "KL(full || reduced) of the next-token distribution, nats"),
        (
            "visual_attention",
            "Share of the answer position's attention on visual tokens",
        ),
    ):
        lines += _table(rows, "all", measure, keeps, title, 4 if measure == "kl" else 3)
    skipped = sorted(
        {(r["method"], r["variant"], r["skipped"]) for r in rows if r.get("skipped")}
    )
    if skipped:
        lines += (
            ["**Skipped**", ""]
            + [f"- {m} / {v}: {why}" for m, v, why in skipped]
            + [""]
        )
    return "\n".join(lines)


def plot(rows, path, n_visual: int, title: str = "") -> None:
    """Accuracy vs kept tokens: one panel per variant, one line per method, plus a panel
    of RESTORE minus base per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = _grid(rows, "all", "accuracy")
    methods = sorted({m for m, _ in acc})
    full = [
        r["accuracy"] for r in rows if r["method"] == "none" and r["family"] == "all"
    ]
    present = [v for v in VARIANT_ORDER if any(var == v for _, var in acc)]
    panels = (*present, "delta")
    cols = max(3, -(-len(panels) // 2))
    fig, axes = plt.subplots(2, cols, figsize=(5 * cols, 8.5), sharex=True)
    cmap = plt.get_cmap("tab20")
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, variant in zip(axes.flat, panels):
        for i, m in enumerate(methods):
            if variant == "delta":
                base, res = acc.get((m, "base"), {}), acc.get((m, "restore"), {})
                pts = {
                    k: res[k] - base[k]
                    for k in res
                    if res[k] is not None and base.get(k) is not None
                }
            else:
                pts = {
                    k: v for k, v in acc.get((m, variant), {}).items() if v is not None
                }
            if pts:
                ks = sorted(pts)
                ax.plot(
                    [k * n_visual for k in ks],
                    [pts[k] for k in ks],
                    "o-",
                    color=cmap(i),
                    label=m,
                )
        if variant == "delta":
            ax.axhline(0, color="k", lw=0.8)
            ax.set_title("restore - base (accuracy)")
        else:
            if full and full[0] is not None:
                ax.axhline(full[0], color="k", ls="--", lw=1, label="full")
            ax.set_title(variant)
            ax.set_ylim(0, 1.02)
        ax.set_xlabel("kept visual tokens")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("accuracy")
    axes[1, 0].set_ylabel("accuracy")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(12, len(labels)), fontsize=8
    )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
