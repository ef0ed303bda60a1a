"""The published model shapes the speed/memory benchmark runs with random weights, one
module per family; ``restore_mlx.bench.configs`` names them (``BUILTIN``).

Every number in these modules is the published ``config.json`` value of the named
checkpoint; only what mlx-vlm's model classes read is written out. The image settings
give the visual-token count that checkpoint produces for one image at that resolution.
"""
