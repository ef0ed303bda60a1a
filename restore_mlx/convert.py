"""Convert a Hugging Face VLM checkpoint to MLX, ready for RESTORE token reduction.

Built on ``mlx_vlm.convert`` (4-bit by default; the vision tower and projector stay
unquantized). The output ``config.json`` records the reduction preset to use by default
(``restore_preset``), which ``restore_mlx.generate`` picks up.

    python -m restore_mlx.convert --hf-path llava-hf/llava-1.5-7b-hf --mlx-path llava4

The architecture is checked before any weights are read. The conversion is written to a
temporary sibling folder and renamed into place only once complete, so a failure never
leaves a half-written model (and ``--force`` replaces an old one only after success).
"""

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Optional

from .adapters import SUPPORTED
from .errors import InputError, OneLineParser, fail
from .presets import DEFAULT_PRESET, PRESETS, get_preset

DTYPES = ("float16", "bfloat16", "float32")
# What mlx.core.quantize (mlx 0.32.4, mode "affine") accepts, found by trying every
# width and group size on it: 1 to 8 bits except 7, groups of 32, 64 or 128. Checked
# before any work, so a typo fails at once instead of after the weights are read.
QUANT_BITS = (1, 2, 3, 4, 5, 6, 8)
QUANT_GROUP_SIZES = (32, 64, 128)
PRESET_KEY = "restore_preset"


def supported_architectures() -> tuple:
    """The ``model_type`` values restore_mlx can reduce."""
    return tuple(SUPPORTED)


def _looks_local(path: str) -> bool:
    # Hub ids are "name" or "org/name"; anything else can only be a folder.
    return path.startswith((".", "/", "~")) or path.count("/") > 1


def read_model_config(path_or_repo: str, revision: Optional[str] = None) -> dict:
    """The ``config.json`` of a local folder or a hub repository (config file only)."""
    local = Path(path_or_repo).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise InputError(
                f"{path_or_repo} has no config.json; is it a model folder?"
            )
        config_file = local / "config.json"
    elif _looks_local(str(path_or_repo)):
        raise InputError(f"model folder {path_or_repo} does not exist")
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_file = hf_hub_download(
                path_or_repo, "config.json", revision=revision
            )
        except Exception as e:  # offline, missing repo, gated...: all one message
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"cannot fetch config.json of {path_or_repo!r}: {reason}")
    try:
        with open(config_file, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read {config_file}: {e}") from e


def check_supported(config: dict, source: str = "model") -> str:
    """The config's ``model_type``; an InputError if restore_mlx cannot reduce it."""
    model_type = config.get("model_type")
    supported = supported_architectures()
    if model_type not in supported:
        raise InputError(
            f"{source}: architecture {model_type!r} is not supported "
            f"(supported: {', '.join(supported)})"
        )
    return model_type


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` to ``out``, replacing ``out`` only at the last step."""
    if not out.exists():
        tmp.rename(out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_paths(hf_path: str, out: Path, force: bool) -> None:
    source = Path(hf_path).expanduser()
    if source.exists() and out.exists() and source.resolve() == out.resolve():
        raise InputError(f"--mlx-path {out} is the source checkpoint itself")
    if out.exists() and not force:
        raise InputError(f"{out} already exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder")
    if not out.parent.is_dir():
        raise InputError(f"parent folder of {out} does not exist")


def check_quantization(bits, group_size, what: str = "quantization") -> None:
    """An InputError unless MLX's affine quantizer takes ``bits`` and ``group_size``."""
    if bits not in QUANT_BITS:
        raise InputError(
            f"{what}: {bits} bits is not supported; "
            f"choose from {', '.join(map(str, QUANT_BITS))}"
        )
    if group_size not in QUANT_GROUP_SIZES:
        raise InputError(
            f"{what}: group size {group_size} is not supported; "
            f"choose from {', '.join(map(str, QUANT_GROUP_SIZES))}"
        )


def convert(
    hf_path: str,
    mlx_path: str = "mlx_model",
    quantize: bool = True,
    q_bits: int = 4,
    q_group_size: int = 64,
    dtype: Optional[str] = None,
    preset: str = DEFAULT_PRESET,
    force: bool = False,
) -> Path:
    """Convert ``hf_path`` (folder or hub id) into an MLX model folder ``mlx_path``.

    Raises InputError (before any heavy work) for an unknown preset or dtype, bits or
    a group size MLX cannot quantize to, an unsupported architecture, or an existing
    ``mlx_path`` without ``force``.
    """
    try:
        get_preset(preset)
    except ValueError as e:
        raise InputError(str(e)) from None
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}")
    if quantize:
        check_quantization(q_bits, q_group_size)
    out = Path(mlx_path).expanduser()
    _check_paths(hf_path, out, force)
    check_supported(read_model_config(hf_path), source=str(hf_path))

    from mlx_vlm.convert import convert as vlm_convert

    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        vlm_convert(
            hf_path,
            mlx_path=str(tmp),
            quantize=quantize,
            q_bits=q_bits,
            q_group_size=q_group_size,
            dtype=dtype,
        )
        config_file = tmp / "config.json"
        config = json.loads(config_file.read_text())
        config[PRESET_KEY] = preset
        config_file.write_text(json.dumps(config, indent=4))
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def configure_parser() -> OneLineParser:
    """The ``restore-mlx-convert`` argument parser; flag names match ``convert``."""
    parser = OneLineParser(
        prog="restore-mlx-convert",
        description="Convert a Hugging Face VLM to MLX for RESTORE token reduction.",
    )
    parser.add_argument(
        "--hf-path",
        "--model",
        required=True,
        help="Local folder or Hugging Face repo id.",
    )
    parser.add_argument(
        "--mlx-path",
        default="mlx_model",
        help="Output folder (written whole or not at all).",
    )
    parser.add_argument(
        "-q",
        "--quantize",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Quantize the language model; --no-quantize keeps full precision.",
    )
    parser.add_argument(
        "--q-bits",
        type=int,
        default=4,
        choices=QUANT_BITS,
        help="Bits per quantized weight.",
    )
    parser.add_argument(
        "--q-group-size",
        type=int,
        default=64,
        choices=QUANT_GROUP_SIZES,
        help="Weights sharing one quantization scale and bias.",
    )
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="Parameter dtype (default: the checkpoint's).",
    )
    parser.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        choices=sorted(PRESETS),
        help="Reduction preset recorded as the model's default.",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="Replace --mlx-path if it exists (only after success).",
    )
    return parser


def main(argv=None) -> None:
    """Command-line entry point: ``python -m restore_mlx.convert``."""
    parser = configure_parser()
    args = parser.parse_args(argv)
    try:
        out = convert(**vars(args))
    except InputError as e:
        fail(e, prog=parser.prog)
    print(f"[INFO] Wrote {out} (restore preset: {args.preset})")


if __name__ == "__main__":
    main()
