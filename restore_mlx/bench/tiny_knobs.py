"""The size knobs every tiny test checkpoint starts from (``write_checkpoint`` takes
overrides for any of them). Kept tiny: CPU tests load these. None: intermediate sizes
default to 2x the width (MoE experts: 1x), vocab_size to the tokenizer's + 4."""

COMMON = dict(
    heads=2, kv_heads=1, vision_hidden_size=32, vision_heads=2, intermediate_size=None,
    vision_intermediate_size=None, vocab_size=None, dtype="float32",
)  # fmt: skip
