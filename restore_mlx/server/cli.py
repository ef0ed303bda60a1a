"""The server's command line: mlx_vlm.server's flags plus ``--preset``."""

import argparse
import os
import sys

from mlx_vlm.server import app as vlm_app
from mlx_vlm.server.cli import main as vlm_main

from ..presets import PRESETS
from .hooks import install
from .usage import add_usage_middleware


def configure_parser() -> argparse.ArgumentParser:
    """The flags restore_mlx adds; every other flag goes to mlx_vlm.server."""
    parser = argparse.ArgumentParser(
        prog="restore-mlx-server",
        description="mlx-vlm's OpenAI-compatible server with RESTORE visual token "
        "reduction; takes every mlx_vlm.server flag (see python -m mlx_vlm.server -h).",
        add_help=False,
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="recipe for every image prompt (default: the model's restore_preset, "
        "else mobile-50); a request may override it with its 'restore' field",
    )
    return parser


def serve(argv, preset=None) -> None:
    """Install the hooks and run mlx_vlm.server's own command line with ``argv``."""
    # Prefix caching serves follow-up turns of a chat; mlx-vlm leaves it off. Turned
    # on here unasked, it stays in memory: mlx-vlm's disk tier (up to 20 GB under
    # ~/.cache) only when APC_DISK_ENABLED asks for it.
    if "APC_ENABLED" not in os.environ:
        os.environ["APC_ENABLED"] = "1"
        os.environ.setdefault("APC_DISK_ENABLED", "0")
    install(preset)
    add_usage_middleware(vlm_app)
    sys.argv = ["restore-mlx-server", *argv]
    vlm_main()


def main(argv=None) -> None:
    """Command-line entry point: ``python -m restore_mlx.server``."""
    parser = configure_parser()
    args, rest = parser.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        print()
    serve(rest, preset=args.preset)
