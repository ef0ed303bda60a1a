"""Named reduction recipes and the ablation variants used by the eval harness."""

from .config import RestoreConfig

# Named by how much they remove. Mobile presets never remove more than half the visual
# tokens. The base reducer must work on every supported architecture (no [CLS] needed).
PRESETS = {
    "mobile-25": RestoreConfig(method="divprune", keep=0.75),
    "mobile-50": RestoreConfig(method="divprune", keep=0.50),
    "server-70": RestoreConfig(method="divprune", keep=0.30),
    "extreme-89": RestoreConfig(method="divprune", keep=64 / 576),
}
DEFAULT_PRESET = "mobile-50"

# Ablations: which parts of RESTORE are on. "base" is the reducer alone as usually
# deployed: full budget, re-indexed positions, plain attention.
_OFF = dict(anchors=False, positions=False, size_bias=False, distance_bias=False)
VARIANTS = {
    "base": dict(restore=False),
    "restore": dict(restore=True),
    "positions": dict(restore=True, **{**_OFF, "positions": True}),
    "calibration": dict(
        restore=True, **{**_OFF, "size_bias": True, "distance_bias": True}
    ),
    "anchors": dict(restore=True, **{**_OFF, "anchors": True}),
    # Full RESTORE with the M-RoPE distance bias on the flattened 1-D index (the same
    # as "restore" on 1-D RoPE models).
    "flat-distance": dict(restore=True, distance_positions="flat"),
}


def get_preset(name: str) -> RestoreConfig:
    """The preset called ``name``; a ValueError listing the known names otherwise."""
    if name not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown preset {name!r}; known presets: {known}")
    return PRESETS[name]
