"""The probe model: mlx-vlm's own llava classes at a size a 2-core CPU can train.

CLIP-style tower (96 px, 8 px patches -> 144 visual tokens plus [CLS], which the
"default" strategy drops), a two-layer GELU projector and a llama LM with RoPE.
``vision_feature_layer`` is -1 so that no trained tower layer goes unused.
"""

import json
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from .scenes import COLORS, GRID, IMAGE_SIZE, PATCH, SHAPES
from .vocab import EOS, IMAGE, words, write_side_files

N_VISUAL = (IMAGE_SIZE // PATCH) ** 2


def probe_config(
    width: int = 128, vision_layers: int = 2, text_layers: int = 3
) -> dict:
    """The config.json of a probe model (llava, CLIP vision tower, llama LM)."""
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
            "rope_theta": 10000.0,
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


def build_model(config: dict):
    """An mlx-vlm llava ``Model`` with fresh weights for ``config``."""
    from mlx_vlm.models import llava

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


def visual_features(model, pixels_nhwc: mx.array) -> mx.array:
    """Projected visual tokens [B, 144, D], the path of ``get_input_embeddings``."""
    *_, hidden = model.vision_tower(pixels_nhwc, output_hidden_states=True)
    feats = hidden[model.vision_feature_layer]
    if model.vision_feature_select_strategy == "default":
        feats = feats[:, 1:]
    return model.multi_modal_projector(feats)


def final_hidden(model, feats: mx.array, text_ids: mx.array) -> mx.array:
    """LM final hidden states for [image tokens, text]; batched, image first."""
    emb = model.language_model.model.embed_tokens(text_ids)
    h = mx.concatenate([feats.astype(emb.dtype), emb], axis=1)
    return model.language_model.model(None, inputs_embeds=h)


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
    path, width: int = 32, layers: int = 1, seed: int = 0
) -> dict:
    """An untrained probe checkpoint (all files) at ``path``; for tests and timing."""
    if width < 32 or width % 32:
        raise ValueError(f"width must be a positive multiple of 32, got {width}")
    mx.random.seed(seed)
    config = probe_config(width, layers, layers)
    save_checkpoint(build_model(config), config, path)
    write_side_files(path)
    return config
