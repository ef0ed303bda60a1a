"""Training batches, training-only heads and the losses of the probe's two stages."""

import mlx.core as mx
import numpy as np
from mlx import nn

from .model import (
    N_VISUAL,
    AuxHeads,
    arch_of,
    build_model,
    lm_context,
    lm_width,
    pixel_inputs,
    prompt_embeddings,
    question_start,
    rotated_qk,
    run_layer,
    visual_features,
    visual_start,
)
from .questions import make_example
from .scenes import COLORS, FAMILIES, GRID, IMAGE_SIZE, PATCH, SHAPES
from .targets import (
    ASKED_SHAPE,
    COUNT_HEAD,
    COUNT_SINK,
    FIRST,
    FIRST_POSITION,
    GATHERED,
    LOOKUP,
    LOOKUP_COUNT,
    RELATION_HEAD,
    RELATION_POSITION,
    RELATION_TARGET,
    question_targets,
)
from .vocab import EOS

TEXT_LEN = 8  # longest question (6 words) + answer + end token, padded


class LMHeads(nn.Module):
    """Linear read-outs of the hop targets (see ``targets``): ``lookup`` after LM layer
    1 at the answer position, ``first`` after layer 1 at a relation's first colour,
    ``gathered`` after layer 2 at the answer position."""

    def __init__(self, dim: int):
        super().__init__()
        self.lookup = [nn.Linear(dim, n) for _, n in LOOKUP]
        self.first = [nn.Linear(dim, n) for _, n in FIRST]
        self.gathered = [nn.Linear(dim, n) for _, n in GATHERED]
        # Row and column of each visual token after layer 1 (``position_loss``).
        self.where = [nn.Linear(dim, GRID), nn.Linear(dim, GRID)]

    def columns(self, states):
        """(group name, head, hidden states [B, D]) in the order of the targets'
        columns: head k reads column k."""
        groups = (
            ("lookup", self.lookup, states["answer"][0]),
            ("first", self.first, states["first"][0]),
            ("gathered", self.gathered, states["answer"][1]),
        )
        for name, heads, h in groups:
            for f in heads:
                yield name, f, h


class Trainer(nn.Module):
    """The probe model plus its training-only heads, trained as one tree."""

    def __init__(self, config: dict):
        super().__init__()
        self.model = build_model(config)
        dim = lm_width(config)
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


def make_batch(tok, split, seed, start, size, objects, families=FAMILIES, model=None):
    """Arrays (pixels, ids, answer position, [answer, end], cell labels, question
    targets) for examples ``start .. start+size`` of ``split``; families cycle.
    Pixels and positions are laid out for ``model``'s architecture (default llava)."""
    arch = "llava" if model is None else arch_of(model)
    q0 = N_VISUAL if model is None else question_start(model)
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
        pos[i] = q0 + len(q) - 1  # the position that predicts the answer
    answers = np.array([[tok.token_to_id(e.answer), eos] for e in ex], np.int32)
    labels = np.stack([cell_labels(e.objects) for e in ex])
    targets = np.stack([question_targets(e.question, e.objects) for e in ex])
    pix = pixel_inputs(np.stack([e.image for e in ex]), arch)
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
    """Answer logits [B, 2, V] (answer word, end token) and the hidden states [B, D]
    after every LM layer at the answer position (``states["answer"]``) and at the text
    index of a relation's first colour (``states["first"]``)."""
    model = trainer.model
    lm = model.language_model.model
    h = prompt_embeddings(model, feats, ids)
    context = lm_context(model, h)
    at = pos[:, None, None]
    first = question_start(model) + FIRST_POSITION
    v0 = visual_start(model)
    states = {"answer": [], "first": [], "visual": []}
    for layer in lm.layers:
        h = run_layer(layer, h, context)
        states["answer"].append(_at(h, at)[:, 0])
        states["first"].append(h[:, first])
        states["visual"].append(h[:, v0 : v0 + feats.shape[1]])
    out = lm.norm(_at(h, mx.stack([pos, pos + 1], axis=1)[:, :, None]))
    return trainer.model.language_model.lm_head(out), states


def lm_aux_loss(trainer, states, targets):
    """Mean cross-entropy of every hop head over the examples where it applies."""
    loss = 0.0
    for col, (_, f, h) in enumerate(trainer.lm_aux.columns(states)):
        t = targets[:, col]
        used = (t > 0).astype(h.dtype)
        ce = nn.losses.cross_entropy(f(h), t, reduction="none")
        loss = loss + (ce * used).sum() / mx.maximum(used.sum(), 1)
    return loss


def position_loss(trainer, states, labels):
    """Cross-entropy of the row and column of every visual token read from its state
    after LM layer 1. A Qwen2-VL tower has relative 2-D RoPE only, so its tokens do not
    know where they are; the LM must write it from their M-RoPE (h, w) positions
    before any lookup by cell or answer by place can work."""
    h = states["visual"][0]
    heads = trainer.lm_aux.where
    return _ce(heads[0](h), labels[:, 2]) + _ce(heads[1](h), labels[:, 3])


def _layer1_attention(trainer, feats, ids, pos):
    """Log-probabilities [B, H, L] of every layer-1 head's attention at the answer
    position (causal: keys after it get -inf)."""
    model = trainer.model
    layer = model.language_model.model.layers[0]
    attn = layer.self_attn
    h = prompt_embeddings(model, feats, ids)
    x = layer.input_layernorm(h)
    B, L, _ = x.shape

    def project(proj, n):
        return proj(x).reshape(B, L, n, -1).transpose(0, 2, 1, 3)

    q = project(attn.q_proj, attn.n_heads)
    k = project(attn.k_proj, attn.n_kv_heads)  # [B, H, L, d]
    q, k = rotated_qk(model, attn, q, k, lm_context(model, h))
    q = q[mx.arange(B), :, pos][:, :, None]
    logits = (q @ k.transpose(0, 1, 3, 2))[:, :, 0] * attn.scale
    logits = mx.where(mx.arange(L)[None, None] <= pos[:, None, None], logits, -mx.inf)
    return logits - mx.logsumexp(logits, -1, keepdims=True)


def _pattern_ce(logp, want, used):
    """Mean cross-entropy of attention ``logp`` against unnormalised ``want`` over the
    examples where ``used``."""
    want = want / mx.maximum(want.sum(-1, keepdims=True), 1e-9)
    ce = -(want * mx.maximum(logp, -1e4)).sum(-1)  # masked keys: 0 x -inf -> 0
    used = used.astype(logp.dtype)
    return (ce * used).sum() / mx.maximum(used.sum(), 1)


def count_ratio_loss(logp, matched, count):
    """Mean squared error of log(matched mass / all other mass) against log(count)
    over the count questions with a count of at least 1.

    The answer reads the count from that ratio, and n against n + 1 differs by only
    log((n + 1) / n) in it (0.29 at 3). The pattern cross-entropy barely sees an error
    of that size (it is second order there: 0.01 nats for 0.3 at n = 2), so on its
    own it left the ratio too loose to count past 2. The other mass includes tokens
    of other objects, whose values would blur the count if they kept any."""
    logp = mx.maximum(logp, -1e4)  # -inf (causal mask, no match) -> finite gradients
    got = mx.logsumexp(mx.where(matched, logp, -1e4), -1)
    got = got - mx.logsumexp(mx.where(matched, -1e4, logp), -1)
    used = count > 0
    want = mx.log(mx.maximum(count, 1).astype(logp.dtype))
    err = mx.where(used, got - want, 0.0)
    return (err * err).sum() / mx.maximum(used.sum(), 1)


def attention_pattern_loss(
    trainer, feats, ids, pos, labels, targets, count_ratio=0.0
):  # fmt: skip
    """Cross-entropy of two layer-1 heads' attention at the answer position against
    the patterns of ``targets``: ``COUNT_HEAD`` on count questions (every token of the
    asked shape, plus the sink), ``RELATION_HEAD`` on relations (the relation word);
    plus ``count_ratio`` x ``count_ratio_loss``."""
    B, n_vis = feats.shape[0], feats.shape[1]
    v0, q0 = visual_start(trainer.model), question_start(trainer.model)
    L = q0 + ids.shape[1]
    idx = mx.arange(L)[None]
    asked = targets[:, ASKED_SHAPE]
    match = (labels[:, 1] == asked[:, None]) & (asked[:, None] > 0)
    count_want = mx.concatenate(
        [
            mx.zeros((B, v0), mx.float32),
            match.astype(mx.float32),
            mx.zeros((B, L - v0 - n_vis), mx.float32),
        ],
        axis=1,
    )
    count_want = count_want + COUNT_SINK * (idx == pos[:, None])
    logp = _layer1_attention(trainer, feats, ids, pos)
    loss = _pattern_ce(logp[:, COUNT_HEAD], count_want, asked > 0)
    if count_ratio:
        matched = mx.pad(match, [(0, 0), (v0, L - v0 - n_vis)])
        count = mx.where(asked > 0, targets[:, LOOKUP_COUNT] - 1, 0)
        ratio = count_ratio_loss(logp[:, COUNT_HEAD], matched, count)
        loss = loss + count_ratio * ratio
    is_relation = targets[:, RELATION_TARGET] > 0
    rel_want = (idx == q0 + RELATION_POSITION).astype(mx.float32)
    rel_want = mx.broadcast_to(rel_want, (B, L))
    return loss + _pattern_ce(logp[:, RELATION_HEAD], rel_want, is_relation)


def vision_loss(trainer, pix, ids, pos, answers, labels, targets):
    return aux_loss(trainer, visual_features(trainer.model, pix), labels)


def answer_loss(
    trainer, pix, ids, pos, answers, labels, targets, lm_aux=0.3, tune=False,
    position_aux=0.0, count_ratio=0.0,
):  # fmt: skip
    """Answer word + 0.1 x end token + ``lm_aux`` x hop targets (+ cell labels if the
    tower is tuned too, + ``position_aux`` x ``position_loss``, + ``lm_aux`` x
    ``count_ratio`` x ``count_ratio_loss``)."""
    feats = visual_features(trainer.model, pix)
    if not tune:
        feats = mx.stop_gradient(feats)
    logits, states = answer_pass(trainer, feats, ids, pos)
    ce = nn.losses.cross_entropy(logits, answers, reduction="none")
    loss = ce[:, 0].mean() + 0.1 * ce[:, 1].mean()
    if lm_aux:
        loss = loss + lm_aux * lm_aux_loss(trainer, states, targets)
        loss = loss + lm_aux * attention_pattern_loss(
            trainer, feats, ids, pos, labels, targets, count_ratio
        )
    if tune:
        loss = loss + 0.5 * aux_loss(trainer, feats, labels)
    if position_aux:
        loss = loss + position_aux * position_loss(trainer, states, labels)
    return loss
