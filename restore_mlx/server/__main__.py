"""``python -m restore_mlx.server``: see ``restore_mlx.server``."""

from .cli import main

if __name__ == "__main__":
    main()
