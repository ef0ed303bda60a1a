"""Training batches, training-only heads and the losses of the probe's two stages."""

import mlx.core as mx
import numpy as np
from mlx import nn
from mlx_vlm.models.base import create_attention_mask

from .model import N_VISUAL, AuxHeads, build_model, visual_features
from .questions import make_example
from .scenes import COLORS, FAMILIES, GRID, IMAGE_SIZE, PATCH, SHAPES
from .targets import GATHER, LOOKUP, question_targets
from .vocab import EOS, normalize

TEXT_LEN = 13  # longest question (11 words) + answer + end token, padded


class LMHeads(nn.Module):
    """Linear read-outs at the answer position: GATHER after LM layer 1, LOOKUP after
    layer 2 (see ``targets``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gather = [nn.Linear(dim, n) for _, n in GATHER]
        self.lookup = [nn.Linear(dim, n) for _, n in LOOKUP]


class Trainer(nn.Module):
    """The llava model plus its training-only heads, trained as one tree."""

    def __init__(self, config: dict):
        super().__init__()
        self.model = build_model(config)
        dim = config["text_config"]["hidden_size"]
        self.aux = AuxHeads(dim)
        self.lm_aux = LMHeads(dim)


def cell_labels(objects) -> np.ndarray:
    """[4, 144] int labels per patch: colour+1, shape+1 (0 = empty), row, column."""
    side = IMAGE_SIZE // PATCH
    per = side // GRID
    rr, cc = np.divmod(np.arange(side * side), side)
    row, col = rr // per, cc // per
    color = np.zeros(side * side, np.int32)
    shape = np.zeros(side * side, np.int32)
    names = list(COLORS)
    for o in objects:
        hit = (row == o.row) & (col == o.col)
        color[hit] = names.index(o.color) + 1
        shape[hit] = SHAPES.index(o.shape) + 1
    return np.stack([color, shape, row, col]).astype(np.int32)


def make_batch(tok, split, seed, start, size, objects, families=FAMILIES):
    """Arrays (pixels, ids, answer position, [answer, end], cell labels, question
    targets) for examples ``start .. start+size`` of ``split``; families cycle."""
    eos = tok.token_to_id(EOS)
    ex = [
        make_example(
            split, seed, start + i, families[(start + i) % len(families)], objects
        )
        for i in range(size)
    ]
    ids = np.zeros((size, TEXT_LEN), np.int32)
    pos = np.zeros(size, np.int32)
    for i, e in enumerate(ex):
        q = tok.encode(e.question).ids
        ids[i, : len(q) + 1] = [*q, tok.token_to_id(e.answer)]
        pos[i] = N_VISUAL + len(q) - 1  # the position that predicts the answer
    answers = np.array([[tok.token_to_id(e.answer), eos] for e in ex], np.int32)
    labels = np.stack([cell_labels(e.objects) for e in ex])
    targets = np.stack([question_targets(e.question, e.objects) for e in ex])
    pix = normalize(np.stack([e.image for e in ex]))
    arrays = [mx.array(a) for a in (pix, ids, pos, answers, labels, targets)]
    return arrays, [e.family for e in ex]


def _ce(logits, labels):
    return nn.losses.cross_entropy(logits, labels, reduction="mean")


def aux_loss(trainer, feats, labels):
    heads = trainer.aux(feats)
    return sum(_ce(h, labels[:, k]) for k, h in enumerate(heads))


def _at(h, idx):
    return mx.take_along_axis(h, idx, axis=1)


def answer_pass(trainer, feats, ids, pos):
    """Answer logits [B, 2, V] (answer word, end token) and the hidden states [B, D] at
    the answer position after every LM layer."""
    lm = trainer.model.language_model.model
    emb = lm.embed_tokens(ids)
    h = mx.concatenate([feats.astype(emb.dtype), emb], axis=1)
    mask = create_attention_mask(h, None)
    at = pos[:, None, None]
    states = []
    for layer in lm.layers:
        h = layer(h, mask, None)
        states.append(_at(h, at)[:, 0])
    out = lm.norm(_at(h, mx.stack([pos, pos + 1], axis=1)[:, :, None]))
    return trainer.model.language_model.lm_head(out), states


def lm_aux_loss(trainer, states, targets):
    heads = trainer.lm_aux
    loss = sum(_ce(f(states[0]), targets[:, k]) for k, f in enumerate(heads.gather))
    n = len(heads.gather)
    return loss + sum(
        _ce(f(states[1]), targets[:, n + k]) for k, f in enumerate(heads.lookup)
    )


def vision_loss(trainer, pix, ids, pos, answers, labels, targets):
    return aux_loss(trainer, visual_features(trainer.model, pix), labels)


def answer_loss(
    trainer, pix, ids, pos, answers, labels, targets, lm_aux=0.3, tune=False
):
    """Answer word + 0.1 x end token + ``lm_aux`` x hop targets (+ cell labels if the
    tower is tuned too)."""
    feats = visual_features(trainer.model, pix)
    if not tune:
        feats = mx.stop_gradient(feats)
    logits, states = answer_pass(trainer, feats, ids, pos)
    ce = nn.losses.cross_entropy(logits, answers, reduction="none")
    loss = ce[:, 0].mean() + 0.1 * ce[:, 1].mean()
    if lm_aux:
        loss = loss + lm_aux * lm_aux_loss(trainer, states, targets)
    if tune:
        loss = loss + 0.5 * aux_loss(trainer, feats, labels)
    return loss
