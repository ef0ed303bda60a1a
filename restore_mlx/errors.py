"""Errors, and the user input checks of the command-line tools.

Library code raises ``RestoreError`` subclasses (ValueErrors whose message names the
fix); only the CLIs turn errors into one line on stderr and exit status 2. Output files
are written atomically so a failure leaves nothing behind."""

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import NoReturn


class RestoreError(ValueError):
    """A request restore_mlx cannot serve; the message names the fix."""


class UnsupportedArchitecture(RestoreError):
    """A model whose architecture no adapter serves."""


class UnsupportedMethod(RestoreError):
    """A reduction method this architecture cannot run (e.g. it reads a score the
    model cannot provide). The eval harness skips exactly these."""


class KVCacheTooSmall(RestoreError):
    """A rotating KV cache (``max_kv_size``) that would wrap during a reduced prompt's
    generation: RESTORE's per-key biases would then land on the wrong keys."""


class InputError(ValueError):
    """Bad user input (path, flag, budget, model). The CLIs print it and exit 2."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows every flag's default, except where none is given: a required
    flag, or a default of None, whose help text says in words what happens unset, and
    help that spells its default out itself ("(default: ...)")."""

    def _get_help_string(self, action):
        spelled_out = "(default:" in (action.help or "")
        if action.required or action.default is None or spelled_out:
            return action.help
        return super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are a single line on stderr, exit 2, and
    whose ``--help`` shows the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message):
        fail(message, prog=self.prog)


def fail(message, prog=None) -> NoReturn:
    """Print ``prog: error: message`` on one line to stderr and exit with status 2."""
    text = " ".join(str(message).split())  # one line, whatever the message held
    print(f"{prog or sys.argv[0]}: error: {text}", file=sys.stderr)
    sys.exit(2)


def check_images(paths) -> list:
    """Open every local image now, so a bad path fails before the model loads."""
    from PIL import Image, UnidentifiedImageError

    pictures = []
    for path in paths:
        if str(path).startswith(("http://", "https://")):
            pictures.append(None)  # fetched by mlx-vlm
            continue
        if not Path(path).exists():
            raise InputError(f"image not found: {path}")
        try:
            with Image.open(path) as picture:
                picture.load()
                pictures.append(picture.convert("RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as e:
            reason = str(e) or type(e).__name__
            raise InputError(f"cannot read image {path}: {reason}") from None
    return pictures


def check_output(path, flag: str) -> None:
    """An InputError unless the folder that will hold ``path`` exists."""
    if path is not None and not Path(path).expanduser().parent.is_dir():
        raise InputError(f"{flag}: folder of {path} does not exist")


def check_can_plot(path, flag: str = "--plot") -> None:
    """An InputError when ``flag`` asks for a plot and matplotlib is missing: said
    before the work whose results it would draw, not after."""
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise InputError(
            f"{flag} needs matplotlib: pip install matplotlib "
            "(or restore-mlx[plot]), or leave out "
            f"{flag}"
        ) from None


def write_atomic(path, write, binary: bool = False) -> Path:
    """Write ``path`` through ``write(file)`` into a temporary sibling, then rename: a
    failure leaves nothing behind. The file gets the permissions of a plain ``open``
    (0666 less the umask), not ``mkstemp``'s private 0600."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    write_atomic(path, lambda f: json.dump(data, f, indent=2))
