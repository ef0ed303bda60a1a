"""Time and peak memory of the similarity-heavy reducers on one large span.

    python -m restore_mlx.bench.large_spans --sizes 729,2916,6561

A 6,561-token tile (81 x 81) is what a 1152 px AnyRes image gives one segment; the
reducers that compare every token with every other one are the cost to watch there.
Progress goes to stderr, the markdown table to stdout.
"""

import argparse
import platform
import sys
import time

import mlx.core as mx

from restore_mlx import reduce

METHODS = ("divprune", "tome", "vispruner", "dart")


def _inputs(n, d, seed=0):
    k1, k2 = mx.random.split(mx.random.key(seed))
    x = mx.random.normal((1, n, d), key=k1)
    cls = mx.softmax(mx.random.normal((1, n), key=k2), axis=-1)
    mx.eval(x, cls)
    return x, {"cls_attention": cls}


def measure(x, method, keep, restore, scores):
    """(seconds, peak bytes above the inputs) of one ``reduce`` call."""
    mx.clear_cache()
    mx.reset_peak_memory()
    base = mx.get_active_memory()
    start = time.perf_counter()
    red = reduce(x, method, keep=keep, restore=restore, **scores)
    mx.eval(red.features, red.sizes, red.assignment, red.positions, red.merged)
    return time.perf_counter() - start, mx.get_peak_memory() - base


def bench(sizes, d, keep, methods):
    """Rows (method, restore, n, seconds, peak MB)."""
    x, scores = _inputs(64, d)
    measure(x, "divprune", keep, True, scores)  # warm-up
    rows = []
    for n in sizes:
        x, scores = _inputs(n, d)
        for method in methods:
            for restore in (False, True):
                s, peak = measure(x, method, keep, restore, scores)
                rows.append((method, restore, n, s, peak / 2**20))
                print(f"{method} restore={restore} N={n}: {s:.2f} s, "
                      f"{peak / 2**20:.0f} MB", file=sys.stderr, flush=True)  # fmt: skip
    return rows


def markdown(rows, d, keep) -> str:
    lines = [
        f"One span, fp32, D={d}, keep={keep}; {mx.default_device()} on "
        f"{platform.machine()}. Seconds / peak MB above the inputs.",
        "",
        "| method | RESTORE | N | s | peak MB |",
        "|---|---|---|---|---|",
    ]
    for method, restore, n, s, mb in rows:
        lines.append(f"| {method} | {'yes' if restore else 'no'} | {n:,} | "
                     f"{s:.2f} | {mb:.0f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="729,2916,6561", help="comma-separated N")
    p.add_argument("--dim", type=int, default=896, help="feature size D")
    p.add_argument("--keep", type=float, default=0.25, help="fraction kept")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = bench(sizes, args.dim, args.keep, args.methods.split(","))
    print(markdown(rows, args.dim, args.keep))


if __name__ == "__main__":
    main()
