"""Runner for ``restore_mlx.convert`` (one implementation; see that module).

python convert/convert.py --hf-path llava-hf/llava-1.5-7b-hf --mlx-path llava-4bit
"""

import sys
from pathlib import Path

if __name__ == "__main__":
    # Run from a source checkout without installing: the package sits next to convert/.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from restore_mlx.convert import main

    main()
