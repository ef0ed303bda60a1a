"""Train the spatial probe from scratch on the CPU: ``python -m restore_mlx.probe.train``.

Two stages. (1) The vision tower and projector learn alone, through per-token auxiliary
heads that read the colour, shape, row and column of the cell under each visual token.
(2) The whole model learns to answer, loss on the answer word and the end token, with
the auxiliary loss kept on and a curriculum on the number of objects (few first).
"""

import argparse
import json
import shutil
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from .model import (
    N_VISUAL,
    AuxHeads,
    build_model,
    final_hidden,
    probe_config,
    save_checkpoint,
    visual_features,
)
from .questions import make_example
from .scenes import COLORS, FAMILIES, GRID, IMAGE_SIZE, MAX_OBJECTS, PATCH, SHAPES
from .vocab import EOS, build_tokenizer, normalize, write_side_files

TEXT_LEN = 13  # longest question (11 words) + answer + end token, padded


class Trainer(nn.Module):
    """The llava model plus its training-only auxiliary heads, trained as one tree."""

    def __init__(self, config: dict):
        super().__init__()
        self.model = build_model(config)
        self.aux = AuxHeads(config["text_config"]["hidden_size"])


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
    """Arrays for examples ``start .. start+size`` of ``split``; families cycle."""
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
        a = tok.token_to_id(e.answer)
        ids[i, : len(q) + 1] = [*q, a]
        pos[i] = N_VISUAL + len(q) - 1  # the position that predicts the answer
    answers = np.array([[tok.token_to_id(e.answer), eos] for e in ex], np.int32)
    labels = np.stack([cell_labels(e.objects) for e in ex])
    pix = normalize(np.stack([e.image for e in ex]))
    arrays = [mx.array(a) for a in (pix, ids, pos, answers, labels)]
    return arrays, [e.family for e in ex]


def aux_loss(trainer, feats, labels):
    heads = trainer.aux(feats)
    return sum(
        nn.losses.cross_entropy(h, labels[:, k], reduction="mean")
        for k, h in enumerate(heads)
    )


def answer_logits(trainer, feats, ids, pos):
    """Logits [B, 2, V] at the answer position and the one after it."""
    h = final_hidden(trainer.model, feats, ids)
    idx = mx.stack([pos, pos + 1], axis=1)[:, :, None]
    h = mx.take_along_axis(h, idx, axis=1)
    return trainer.model.language_model.lm_head(h)


def vision_loss(trainer, pix, ids, pos, answers, labels):
    return aux_loss(trainer, visual_features(trainer.model, pix), labels)


def full_loss(trainer, pix, ids, pos, answers, labels):
    feats = visual_features(trainer.model, pix)
    logits = answer_logits(trainer, feats, ids, pos)
    ce = nn.losses.cross_entropy(logits, answers, reduction="none")
    # The answer word matters; the end token is trivial but must be learned for generate.
    return (
        ce[:, 0].mean() + 0.1 * ce[:, 1].mean() + 0.5 * aux_loss(trainer, feats, labels)
    )


def lm_loss(trainer, pix, ids, pos, answers, labels):
    """Answer loss with the vision side frozen: no gradient flows into the tower."""
    feats = mx.stop_gradient(visual_features(trainer.model, pix))
    logits = answer_logits(trainer, feats, ids, pos)
    ce = nn.losses.cross_entropy(logits, answers, reduction="none")
    return ce[:, 0].mean() + 0.1 * ce[:, 1].mean()


def make_step(trainer, optimizer, loss_fn):
    state = [trainer.state, optimizer.state]
    grad_fn = nn.value_and_grad(trainer, loss_fn)

    @partial(mx.compile, inputs=state, outputs=state)
    def step(*batch):
        loss, grads = grad_fn(trainer, *batch)
        grads, _ = optim.clip_grad_norm(grads, 1.0)
        optimizer.update(trainer, grads)
        return loss

    return step


def schedule(lr, steps, warmup):
    warm = optim.linear_schedule(lr * 0.01, lr, warmup)
    cos = optim.cosine_decay(lr, max(1, steps - warmup), lr * 0.02)
    return optim.join_schedules([warm, cos], [warmup])


def evaluate(trainer, tok, seed, per_family=48, objects=(2, MAX_OBJECTS)):
    """Validation accuracy per family (argmax over the whole vocabulary)."""
    n = per_family * len(FAMILIES)
    hits = {f: [] for f in FAMILIES}
    for start in range(0, n, 64):
        (pix, ids, pos, answers, _), fams = make_batch(
            tok, "val", seed, start, min(64, n - start), objects
        )
        logits = answer_logits(trainer, visual_features(trainer.model, pix), ids, pos)
        pred = mx.argmax(logits[:, 0], axis=-1)
        for f, ok in zip(fams, (pred == answers[:, 0]).tolist()):
            hits[f].append(ok)
    return {f: float(np.mean(v)) for f, v in hits.items()}


def objects_at(step, steps):
    """Curriculum on the object count: 1-2, then 1-4, then the full 1-6."""
    if step < 0.15 * steps:
        return (1, 2)
    if step < 0.35 * steps:
        return (1, 4)
    return (1, MAX_OBJECTS)


def _log(msg, **fields):
    print(
        json.dumps({"msg": msg, "time": round(time.time() - _T0, 1), **fields}),
        flush=True,
    )


def train_vision(trainer, tok, args):
    """Stage 1: tower + projector + auxiliary heads only."""
    trainer.model.language_model.freeze()
    opt = optim.AdamW(
        schedule(args.vision_lr, args.vision_steps, 50), weight_decay=0.01
    )
    step = make_step(trainer, opt, vision_loss)
    bs = args.vision_batch
    for s in range(args.vision_steps):
        batch, _ = make_batch(tok, "train", args.seed, s * bs, bs, (1, MAX_OBJECTS))
        loss = step(*batch)
        mx.eval(loss)
        if s % 25 == 0 or s == args.vision_steps - 1:
            _log("vision", step=s, loss=round(loss.item(), 4))
        if (s + 1) % 100 == 0 or s == args.vision_steps - 1:
            _log("aux-val", step=s, **aux_accuracy(trainer, tok, args.seed))
    trainer.model.language_model.unfreeze()


def aux_accuracy(trainer, tok, seed, n=64):
    """Per-token accuracy of the auxiliary heads on validation scenes."""
    (pix, _, _, _, labels), _ = make_batch(tok, "val", seed, 0, n, (1, MAX_OBJECTS))
    heads = trainer.aux(visual_features(trainer.model, pix))
    names = ("color", "shape", "row", "col")
    return {
        k: round((mx.argmax(h, -1) == labels[:, i]).mean().item(), 4)
        for i, (k, h) in enumerate(zip(names, heads))
    }


def train_full(trainer, tok, args, out: Path, config: dict):
    """Stage 2: everything, answer loss + auxiliary loss, object-count curriculum."""
    opt = optim.AdamW(schedule(args.lr, args.steps, args.warmup), weight_decay=0.01)
    if args.tune_vision:
        step = make_step(trainer, opt, full_loss)
    else:
        trainer.model.vision_tower.freeze()
        trainer.model.multi_modal_projector.freeze()
        trainer.aux.freeze()
        step = make_step(trainer, opt, lm_loss)
    offset = (
        args.vision_steps * args.vision_batch
    )  # fresh training examples for stage 2
    best = -1.0
    for s in range(args.steps):
        objects = objects_at(s, args.steps)
        batch, _ = make_batch(
            tok, "train", args.seed, offset + s * args.batch, args.batch, objects
        )
        loss = step(*batch)
        mx.eval(loss)
        if s % 25 == 0:
            _log("train", step=s, loss=round(loss.item(), 4), objects=list(objects))
        if (s + 1) % args.eval_every == 0 or s == args.steps - 1:
            acc = evaluate(trainer, tok, args.seed)
            mean = float(np.mean(list(acc.values())))
            _log(
                "val",
                step=s,
                mean=round(mean, 4),
                **{k: round(v, 3) for k, v in acc.items()},
            )
            if mean >= best and objects[1] == MAX_OBJECTS:
                best = mean
                save_checkpoint(trainer.model, config, out)
                _log("saved", step=s, mean=round(mean, 4))
    if best < 0:  # no full-curriculum evaluation happened (very short runs)
        save_checkpoint(trainer.model, config, out)
    return best


def train(args) -> float:
    """Train a probe model and write a loadable checkpoint to ``args.out``."""
    mx.random.seed(args.seed)
    np.random.seed(args.seed)
    config = probe_config(args.width, args.vision_layers, args.text_layers)
    trainer = Trainer(config)
    tok = build_tokenizer()
    out = Path(args.out)
    write_side_files(out)
    _log("start", config=config, args=vars(args))
    train_vision(trainer, tok, args)
    best = train_full(trainer, tok, args, out, config)
    _log("done", best_val=best)
    if args.copy_to:
        shutil.copytree(out, args.copy_to, dirs_exist_ok=True)
    return best


def configure_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/probe-model", help="checkpoint folder")
    p.add_argument("--copy-to", default=None, help="also copy the best checkpoint here")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--vision-batch", type=int, default=32)
    p.add_argument("--vision-lr", type=float, default=2e-3)
    p.add_argument(
        "--tune-vision", action="store_true", help="train the tower in stage 2 too"
    )
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--vision-steps", type=int, default=400)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=150)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--vision-layers", type=int, default=2)
    p.add_argument("--text-layers", type=int, default=3)
    return p


_T0 = time.time()


def main(argv=None):
    args = configure_parser().parse_args(argv)
    for name in ("batch", "steps", "vision_steps", "eval_every", "width"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.width % 32:
        raise ValueError(
            f"--width must be a multiple of 32 (head size), got {args.width}"
        )
    train(args)


if __name__ == "__main__":
    main()
