"""Named reduction recipes and the ablation variants used by the eval harness."""

from .config import RestoreConfig

# Named by how much they remove. Mobile presets never remove more than half the visual
# tokens. The base reducer must work on every supported architecture (no [CLS] needed).
# At mild budgets both probes (LLaVA, 1-D RoPE; Qwen2-VL, M-RoPE) answer better with
# divprune at its original positions alone than with full RESTORE (keep 0.75: 0.96 vs
# 0.92 and 0.99 vs 0.90; keep 0.5: 0.95 vs 0.92 and 0.99 vs 0.92); full RESTORE wins
# from 0.25 down. So the mobile presets keep positions and leave out the calibration
# and the anchors (which also saves the bias memory).
# Which parts of RESTORE are on: none, or the original positions alone (the
# "positions" ablation below and the mobile presets).
_OFF = dict(anchors=False, positions=False, size_bias=False, distance_bias=False)
_POSITIONS_ONLY = {**_OFF, "positions": True}
PRESETS = {
    "mobile-25": RestoreConfig(method="divprune", keep=0.75, **_POSITIONS_ONLY),
    "mobile-50": RestoreConfig(method="divprune", keep=0.50, **_POSITIONS_ONLY),
    "server-70": RestoreConfig(method="divprune", keep=0.30),
    "extreme-89": RestoreConfig(method="divprune", keep=64 / 576),
}
DEFAULT_PRESET = "mobile-50"

# Ablations: which parts of RESTORE are on. "base" is the reducer alone as usually
# deployed: full budget, re-indexed positions, plain attention.
VARIANTS = {
    "base": dict(restore=False),
    "restore": dict(restore=True),
    "positions": dict(restore=True, **_POSITIONS_ONLY),
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
