"""Warm-starting a probe of one architecture from a trained probe of another.

Both probes cut a scene into the same 12 x 12 grid of 8 px visual tokens in raster
order, and their vocabularies share every word id (Qwen's adds vision tokens at the
end). So a trained probe can teach a new one in two ways:

- ``teacher_loss``: in stage 1 the new tower's tokens also regress onto the teacher's
  projected tokens of the same scene (mean squared error relative to the teacher's
  mean square), so they land in the basis the teacher's LM reads;
- ``init_language_model``: the new LM starts from the teacher's LM weights wherever the
  two have the same parameter (the embedding and output rows of shared words
  included); what only the new one has (Qwen's q/k/v biases) keeps its fresh values.

The new model's own positions (M-RoPE for Qwen) still have to be learned in stage 2.
"""

from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten

from .losses import make_batch, vision_loss
from .model import visual_features


def load_teacher(path):
    """A trained probe checkpoint, frozen, for ``teacher_features``."""
    from mlx_vlm.utils import load_model

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ValueError(f"--teacher: no probe checkpoint at {path}")
    teacher = load_model(path)
    teacher.freeze()
    return teacher


def teacher_features(teacher, tok, split, seed, start, size, objects):
    """The teacher's projected visual tokens [B, 144, D] of the same scenes that
    ``make_batch`` draws for these arguments."""
    (pix, *_), _ = make_batch(tok, split, seed, start, size, objects, model=teacher)
    return mx.stop_gradient(visual_features(teacher, pix))


def teacher_loss(trainer, pix, ids, pos, answers, labels, targets, taught):
    """Stage-1 loss plus the relative squared distance to the teacher's tokens."""
    feats = visual_features(trainer.model, pix)
    scale = mx.maximum(mx.mean(taught * taught), 1e-6)
    distance = mx.mean((feats - taught) ** 2) / scale
    return vision_loss(trainer, pix, ids, pos, answers, labels, targets) + distance


def init_language_model(model, teacher_path) -> list:
    """Copy the teacher's LM weights into ``model``'s LM where names match; tables
    with more rows here (a larger vocabulary) get the teacher's rows first. Returns
    the names copied."""
    weights = mx.load(str(Path(teacher_path) / "model.safetensors"))
    own = dict(tree_flatten(model.parameters()))
    copied = []
    for name, value in weights.items():
        if not name.startswith("language_model.") or name not in own:
            continue
        mine = own[name]
        if mine.shape == value.shape:
            own[name] = value
        elif mine.shape[1:] == value.shape[1:] and mine.shape[0] > value.shape[0]:
            own[name] = mx.concatenate([value, mine[value.shape[0] :]])
        else:
            continue
        copied.append(name)
    model.load_weights([(k, own[k]) for k in copied], strict=False)
    return copied
