"""restore_mlx: RESTORE visual token reduction for multimodal LLMs in MLX.

The core (``reduce``, ``REDUCERS``, ``Reduction``) is pure ``mlx.core``; the mlx-vlm
integration (``apply``, ``remove``, ``generate``...) is imported on first use so that
``import restore_mlx`` stays light.
"""

import importlib
import warnings

from .config import RestoreConfig
from .core.api import REDUCERS, reduce
from .core.types import Reduction

# `python -m restore_mlx.generate` finds the submodule already imported by this file;
# the CLI does not depend on that, so silence runpy's warning about it.
warnings.filterwarnings(
    "ignore",
    message=r".*'restore_mlx\.\w+' found in sys\.modules",
    category=RuntimeWarning,
)

# As in mlx-lm: the CLI module is also where the library functions live. Importing it
# here binds the package attribute to the function, not the module; the module keeps
# mlx-vlm imports inside its functions so this stays cheap.
from .generate import generate, stream_generate  # noqa: E402

_LAZY = {
    "apply": "restore_mlx.integration",
    "remove": "restore_mlx.integration",
    "is_applied": "restore_mlx.integration",
    "encode_image": "restore_mlx.integration",
    "prepare_inputs": "restore_mlx.integration",
    "inspect_prefill": "restore_mlx.trace",
    "load": "restore_mlx.adapters.processors",
    "PRESETS": "restore_mlx.presets",
}

__all__ = [
    "RestoreConfig",
    "REDUCERS",
    "Reduction",
    "reduce",
    "generate",
    "stream_generate",
    *_LAZY,
]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'restore_mlx' has no attribute {name!r}")
