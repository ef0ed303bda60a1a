"""Time every reducer, alone and under RESTORE, at real visual-token shapes.

    python -m restore_mlx.bench.reducers --runs 3

Progress goes to stderr, the markdown table to stdout.

On a Linux CPU, preload the system OpenBLAS for realistic matmul speed (same results):
    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3 python ...
"""

import argparse
import os
import platform
import statistics
import sys
import time

import mlx.core as mx

from restore_mlx import REDUCERS, reduce

# (label, visual tokens N, hidden size D, patch grid) of published configs.
SHAPES = {
    "llava-1.5-7b": (576, 4096, (24, 24)),
    "llava-next-7b": (2880, 4096, (48, 60)),  # 5 crops of 24 x 24, as a 48 x 60 grid
}


def _inputs(n, d, grid, seed=0):
    key = mx.random.key(seed)
    k1, k2, k3, k4 = mx.random.split(key, 4)
    x = mx.random.normal((1, n, d), key=k1)
    scores = dict(
        grid=grid,
        cls_attention=mx.softmax(mx.random.normal((1, n), key=k2), axis=-1),
        text_attention=mx.softmax(mx.random.normal((1, n), key=k3), axis=-1),
        keys=mx.random.normal((1, n, 128), key=k4),
    )
    mx.eval(x, *(v for v in scores.values() if isinstance(v, mx.array)))
    return x, scores


def time_one(x, method, keep, restore, scores, runs):
    """Median wall time (ms) of ``reduce`` after one warm-up call."""
    times = []
    for i in range(runs + 1):
        start = time.perf_counter()
        red = reduce(x, method, keep=keep, restore=restore, **scores)
        mx.eval(red.features, red.sizes, red.assignment, red.positions, red.merged)
        if i:  # the first call is the warm-up
            times.append(1e3 * (time.perf_counter() - start))
    return statistics.median(times)


def bench(shapes=SHAPES, methods=tuple(REDUCERS), keep=2 / 9, runs=3):
    """Rows (method, {(shape, restore): ms}) for every method and shape."""
    results = {m: {} for m in methods}
    for label, (n, d, grid) in shapes.items():
        x, scores = _inputs(n, d, grid)
        for method in methods:
            for restore in (False, True):
                ms = time_one(x, method, keep, restore, scores, runs)
                results[method][(label, restore)] = ms
                tag = "+RESTORE" if restore else "base"
                print(
                    f"{label} {method} {tag}: {ms:.1f} ms", file=sys.stderr, flush=True
                )
    return results


def markdown(results, shapes, keep, runs):
    blas = (
        "OpenBLAS preloaded"
        if "openblas" in os.environ.get("LD_PRELOAD", "")
        else "no BLAS preload"
    )
    heads = [f"{label} base" for label in shapes] + [
        f"{label} +RESTORE" for label in shapes
    ]
    sizes = ", ".join(f"{lab} N={n}, D={d}" for lab, (n, d, _) in shapes.items())
    lines = [
        f"Reduction time (ms, median of {runs} after a warm-up), fp32, keep={keep:.3f} "
        f"({sizes}); {mx.default_device()} on {platform.machine()}, {blas}.",
        "",
        "| method | " + " | ".join(heads) + " |",
        "|---" * (len(heads) + 1) + "|",
    ]
    for method, row in results.items():
        cells = [row[(lab, False)] for lab in shapes] + [
            row[(lab, True)] for lab in shapes
        ]
        lines.append(f"| {method} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    return "\n".join(lines)


def configure_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell")
    parser.add_argument("--keep", type=float, default=2 / 9, help="fraction kept")
    parser.add_argument("--methods", nargs="*", default=list(REDUCERS))
    parser.add_argument(
        "--shapes", nargs="*", default=list(SHAPES), choices=list(SHAPES)
    )
    return parser


def main():
    args = configure_parser().parse_args()
    shapes = {k: SHAPES[k] for k in args.shapes}
    results = bench(shapes, args.methods, args.keep, args.runs)
    print(markdown(results, shapes, args.keep, args.runs))


if __name__ == "__main__":
    main()
