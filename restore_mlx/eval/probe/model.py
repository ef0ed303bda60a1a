"""The probe model: mlx-vlm's own classes at a size a 2-core CPU can train.

``llava`` (the shipped probe): CLIP-style tower (96 px, 8 px patches -> 144 visual
tokens plus [CLS], which the "default" strategy drops), a two-layer GELU projector and a
llama LM with RoPE. ``vision_feature_layer`` is -1 so that no trained tower layer goes
unused. ``qwen2_vl``: see ``qwen``; the same 144 tokens, M-RoPE positions.

The functions here take either; what differs per architecture is the prompt around the
visual tokens (``visual_start``, ``question_start``), the pixel layout
(``pixel_inputs``) and how decoder layers get their positions (``lm_context``).
"""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from . import qwen
from .scenes import COLORS, GRID, IMAGE_SIZE, PATCH, SHAPES
from .vocab import EOS, IMAGE, normalize, words, write_side_files

N_VISUAL = (IMAGE_SIZE // PATCH) ** 2
ARCHS = ("llava", "qwen2_vl")
# mlx-vlm's qwen2_vl config does not keep the vision end id; the probe vocabulary does.
_QWEN_END = words("qwen2_vl").index(qwen.VISION_END)


def probe_config(
    width: int = 128, vision_layers: int = 2, text_layers: int = 3, arch="llava",
    rope_theta=None,
) -> dict:  # fmt: skip
    """The config.json of a probe model: ``llava`` (CLIP vision tower, llama LM) or
    ``qwen2_vl`` (Qwen2-VL tower and merger, Qwen2 LM with M-RoPE); ``rope_theta``
    None keeps each architecture's default (1e4 llava, Qwen2-VL's 1e6)."""
    if arch == "qwen2_vl":
        theta = qwen.ROPE_THETA if rope_theta is None else rope_theta
        return qwen.qwen_config(words(arch), width, vision_layers, text_layers, theta)
    if arch != "llava":
        raise ValueError(
            f"unknown probe architecture {arch!r}; expected one of {ARCHS}"
        )
    vocab = words()
    return {
        "model_type": "llava",
        "architectures": ["LlavaForConditionalGeneration"],
        "image_token_index": vocab.index(IMAGE),
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -1,
        "vocab_size": len(vocab),
        "eos_token_id": [vocab.index(EOS)],
        "text_config": {
            "model_type": "llama",
            "hidden_size": width,
            "num_hidden_layers": text_layers,
            "intermediate_size": 2 * width,
            "num_attention_heads": width // 32,
            "num_key_value_heads": width // 32,
            "rms_norm_eps": 1e-5,
            "vocab_size": len(vocab),
            "rope_theta": 10000.0 if rope_theta is None else rope_theta,
            "max_position_embeddings": 512,
            "tie_word_embeddings": False,
        },
        "vision_config": {
            "model_type": "clip_vision_model",
            "num_hidden_layers": vision_layers,
            "hidden_size": width,
            "intermediate_size": 2 * width,
            "num_attention_heads": width // 32,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH,
            "projection_dim": width,
            "num_channels": 3,
            "layer_norm_eps": 1e-5,
        },
    }


def arch_of(model_or_config) -> str:
    """The probe architecture of a model or config dict."""
    if isinstance(model_or_config, nn.Module):  # a Module is a dict too
        return model_or_config.config.model_type
    return model_or_config["model_type"]


def lm_width(config: dict) -> int:
    """Hidden size of the LM (nested for llava, at the root for qwen2_vl)."""
    return config.get("text_config", config)["hidden_size"]


def build_model(config: dict):
    """An mlx-vlm ``Model`` of ``config``'s architecture with fresh weights."""
    from mlx_vlm.models import llava

    if arch_of(config) == "qwen2_vl":
        return qwen.build_qwen(config)

    cfg = llava.ModelConfig.from_dict(config)
    cfg.text_config = llava.TextConfig.from_dict(config["text_config"])
    cfg.vision_config = llava.VisionConfig.from_dict(config["vision_config"])
    return llava.Model(cfg)


class AuxHeads(nn.Module):
    """Per-token linear read-outs of the cell under a visual token: colour, shape, row,
    column.

    Training only; they make the projected features say what and where before the LM
    has to learn lookups over them. They are not saved with the checkpoint.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.color = nn.Linear(dim, len(COLORS) + 1)
        self.shape = nn.Linear(dim, len(SHAPES) + 1)
        self.row = nn.Linear(dim, GRID)
        self.col = nn.Linear(dim, GRID)

    def __call__(self, feats):
        return self.color(feats), self.shape(feats), self.row(feats), self.col(feats)


def pixel_inputs(images, arch: str = "llava"):
    """uint8 scenes [B, H, W, 3] -> what ``visual_features`` takes, as the saved image
    processor makes it: NHWC pixels (llava) or flattened patches (qwen2_vl)."""
    return qwen.patchify(images) if arch == "qwen2_vl" else normalize(images)


def visual_start(model) -> int:
    """Prompt index of the first visual token (Qwen: after ``<|vision_start|>``)."""
    return 1 if arch_of(model) == "qwen2_vl" else 0


def question_start(model) -> int:
    """Prompt index of the first question token (Qwen: after ``<|vision_end|>``)."""
    return N_VISUAL + 2 * visual_start(model)


def visual_features(model, pixels: mx.array) -> mx.array:
    """Projected visual tokens [B, 144, D], the path of ``get_input_embeddings``."""
    if arch_of(model) == "qwen2_vl":
        return qwen.tower_features(model, pixels)
    *_, hidden = model.vision_tower(pixels, output_hidden_states=True)
    feats = hidden[model.vision_feature_layer]
    if model.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]
    return model.multi_modal_projector(feats)


def prompt_embeddings(model, feats: mx.array, text_ids: mx.array) -> mx.array:
    """Embeddings [B, L, D] of the probe prompt: the visual tokens (between Qwen's
    vision start and end tokens), then the text."""
    embed = model.language_model.model.embed_tokens
    emb = embed(text_ids)
    parts = [feats.astype(emb.dtype), emb]
    if arch_of(model) == "qwen2_vl":
        ends = embed(mx.array([model.config.vision_start_token_id, _QWEN_END]))
        ends = mx.broadcast_to(ends[None], (feats.shape[0], 2, ends.shape[-1]))
        parts = [ends[:, :1], parts[0], ends[:, 1:], emb]
    return mx.concatenate(parts, axis=1)


def lm_context(model, h: mx.array):
    """What every decoder layer takes besides ``h``: (mask,) for llava; (mask,
    positions, rotary cos/sin) at the model's own M-RoPE positions for qwen2_vl."""
    from mlx_vlm.models.base import create_attention_mask

    if arch_of(model) == "qwen2_vl":
        text_len = h.shape[1] - question_start(model) + 1  # vision end + text
        return qwen.layer_context(model, h, qwen.position_ids(model, text_len))
    return (create_attention_mask(h, None),)


def run_layer(layer, h: mx.array, context) -> mx.array:
    """One decoder layer on ``h`` (no cache) with ``lm_context``'s arguments."""
    return layer(h, context[0], None, *context[1:])


def rotated_qk(model, attn, q: mx.array, k: mx.array, context):
    """Queries and keys [B, H, L, d] after the layer's RoPE at the prompt positions."""
    if arch_of(model) == "qwen2_vl":
        return qwen.rotate_qk(attn, q, k, context)
    return attn.rope(q), attn.rope(k)


def final_hidden(model, feats: mx.array, text_ids: mx.array) -> mx.array:
    """LM final hidden states of the probe prompt for [image tokens, text]; batched."""
    h = prompt_embeddings(model, feats, text_ids)
    if arch_of(model) == "llava":
        return model.language_model.model(None, inputs_embeds=h)
    context = lm_context(model, h)
    lm = model.language_model.model
    for layer in lm.layers:
        h = run_layer(layer, h, context)
    return lm.norm(h)


def save_checkpoint(model, config: dict, path) -> None:
    """Write config.json and model.safetensors (side files come from ``vocab``)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(
        str(path / "model.safetensors"), weights, metadata={"format": "mlx"}
    )


def write_random_checkpoint(
    path, width: int = 32, layers: int = 1, seed: int = 0, arch: str = "llava"
) -> dict:
    """An untrained probe checkpoint (all files) at ``path``; for tests and timing."""
    step = 64 if arch == "qwen2_vl" else 32  # the Qwen tower is half as wide
    if width < step or width % step:
        raise ValueError(f"width must be a positive multiple of {step}, got {width}")
    mx.random.seed(seed)
    config = probe_config(width, layers, layers, arch)
    save_checkpoint(build_model(config), config, path)
    write_side_files(path, arch)
    return config
