"""Train the spatial probe on the CPU: ``python -m restore_mlx.eval.probe.train``.

Two stages. (1) The vision tower and projector learn alone, through per-token auxiliary
heads that read the colour, shape, row and column of the cell under each visual token.
(2) With the tower frozen, the LM learns to answer: loss on the answer word and the end
token, plus the hop targets of ``targets`` (what was asked, after layer 1; what the
lookup found, after layer 2), with a curriculum on the number of objects (few first).

``--arch qwen2_vl`` trains the same way with mlx-vlm's Qwen2-VL classes; its tower has
no absolute positions, so ``--position-aux`` asks the LM to write each visual token's
row and column from its M-RoPE positions. ``--teacher`` and ``--init-lm`` warm-start
from a trained probe (``warmstart``).

On Linux, MLX's CPU matmul is far faster with the system OpenBLAS preloaded
(``LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3``): a Qwen2-VL
stage-1 step took 1.0 s instead of 6.0 s here, with identical losses.
"""

import argparse
import json
import shutil
import time
from functools import partial
from pathlib import Path

import mlx.core as mx
import mlx.optimizers as optim
import numpy as np
from mlx import nn
from mlx.utils import tree_flatten

from . import warmstart
from .losses import Trainer, answer_loss, make_batch, vision_loss
from .model import ARCHS, probe_config, save_checkpoint
from .questions import TRAINING_FAMILIES
from .scenes import FAMILIES, MAX_OBJECTS
from .validation import aux_accuracy, evaluate
from .vocab import build_tokenizer, write_side_files


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


def objects_at(step, steps, curriculum=True):
    """Curriculum on the object count: 1-2, then 1-4, then the full 1-6."""
    if not curriculum:
        return (1, MAX_OBJECTS)
    if step < 0.15 * steps:
        return (1, 2)
    if step < 0.35 * steps:
        return (1, 4)
    return (1, MAX_OBJECTS)


def _log(msg, **fields):
    stamp = {"msg": msg, "time": round(time.time() - _T0, 1)}
    print(json.dumps({**stamp, **fields}), flush=True)


def train_vision(trainer, tok, args):
    """Stage 1: tower + projector + per-token auxiliary heads only (+ the teacher's
    tokens as targets with ``--teacher``)."""
    trainer.model.language_model.freeze()
    opt = optim.AdamW(
        schedule(args.vision_lr, args.vision_steps, 50), weight_decay=0.01
    )
    teacher = warmstart.load_teacher(args.teacher) if args.teacher else None
    step = make_step(trainer, opt, warmstart.teacher_loss if teacher else vision_loss)
    bs = args.vision_batch
    for s in range(args.vision_steps):
        where = (tok, "train", args.seed, s * bs, bs, (1, MAX_OBJECTS))
        batch, _ = make_batch(*where, model=trainer.model)
        if teacher is not None:
            batch.append(warmstart.teacher_features(teacher, *where))
        loss = step(*batch)
        mx.eval(loss)
        if s % 25 == 0 or s == args.vision_steps - 1:
            _log("vision", step=s, loss=round(loss.item(), 4))
        if (s + 1) % 100 == 0 or s == args.vision_steps - 1:
            _log("aux-val", step=s, **aux_accuracy(trainer, tok, args.seed))
    trainer.model.language_model.unfreeze()


def train_answers(trainer, tok, args, out: Path, config: dict):
    """Stage 2: answer loss + hop targets, object-count curriculum; the tower is frozen
    unless ``--tune-vision``. Saves the best full-curriculum checkpoint."""
    opt = optim.AdamW(schedule(args.lr, args.steps, args.warmup), weight_decay=0.01)
    if not args.tune_vision:
        trainer.model.vision_tower.freeze()  # Qwen's merger is part of the tower
        if "multi_modal_projector" in trainer.model:
            trainer.model.multi_modal_projector.freeze()
        trainer.aux.freeze()
    loss_fn = partial(
        answer_loss,
        lm_aux=args.lm_aux,
        tune=args.tune_vision,
        position_aux=args.position_aux,
        count_ratio=args.count_ratio,
    )
    step = make_step(trainer, opt, loss_fn)
    offset = args.vision_steps * args.vision_batch + 10**7  # fresh examples for stage 2
    best = -1.0
    # Families cycle through the batch; --oversample lists some twice.
    families = (*FAMILIES, *args.oversample)
    for s in range(args.steps):
        objects = objects_at(s, args.steps, not args.no_curriculum)
        start = offset + s * args.batch
        batch, _ = make_batch(
            tok, "train", args.seed, start, args.batch, objects, families, trainer.model
        )
        loss = step(*batch)
        mx.eval(loss)
        if s % 25 == 0:
            _log("train", step=s, loss=round(loss.item(), 4), objects=list(objects))
        if (s + 1) % args.eval_every == 0 or s == args.steps - 1:
            acc = evaluate(trainer, tok, args.seed)
            mean = float(np.mean([acc[f] for f in FAMILIES]))
            _log(
                "val",
                step=s,
                mean=round(mean, 4),
                **{k: round(v, 3) for k, v in acc.items()},
            )
            if mean >= best and objects[1] == MAX_OBJECTS:
                best = mean
                save_checkpoint(trainer.model, config, out)
                trainer.save_weights(
                    str(out.with_name(out.name + "-trainer.safetensors"))
                )
                _log("saved", step=s, mean=round(mean, 4))
    if best < 0:  # no full-curriculum evaluation happened (very short runs)
        save_checkpoint(trainer.model, config, out)
    return best


def _init(trainer, path):
    """Start from ``path``: a stage-1 trainer file (.safetensors) or a checkpoint.

    Weights whose shape differs from this model's (an older vocabulary, another width)
    are skipped and named: loading them would make the embedding lookup index past
    its table.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
        prefix = "model."
    elif path.is_file():
        prefix = ""
    else:
        raise ValueError(f"--init: no checkpoint or weights file at {path}")
    own = dict(tree_flatten(trainer.parameters()))
    loaded, skipped = [], []
    for k, v in mx.load(str(path)).items():
        key = prefix + k
        fits = key in own and own[key].shape == v.shape
        (loaded if fits else skipped).append((key, v))
    trainer.load_weights(loaded, strict=False)
    if skipped:
        _log("init-skipped", names=[k for k, _ in skipped])


def train(args) -> float:
    """Train a probe model and write a loadable checkpoint to ``args.out``."""
    mx.random.seed(args.seed)
    np.random.seed(args.seed)
    config = probe_config(
        args.width, args.vision_layers, args.text_layers, args.arch, args.rope_theta
    )
    trainer = Trainer(config)
    if args.init:
        _init(trainer, args.init)
    if args.init_lm:
        copied = warmstart.init_language_model(trainer.model, args.init_lm)
        _log("init-lm", copied=len(copied))
    tok = build_tokenizer(args.arch)
    out = Path(args.out)
    write_side_files(out, args.arch)
    _log("start", config=config, args=vars(args))
    if args.vision_steps:
        train_vision(trainer, tok, args)
        # Everything, training heads included, so stage 2 can be rerun from here.
        trainer.save_weights(str(out.with_name(out.name + "-stage1.safetensors")))
    best = train_answers(trainer, tok, args, out, config)
    _log("done", best_val=best)
    if args.copy_to:
        shutil.copytree(out, args.copy_to, dirs_exist_ok=True)
    return best


def configure_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--out", default="runs/probe-model", help="checkpoint folder")
    add("--copy-to", default=None, help="also copy the best checkpoint here")
    add("--init", default=None, help="start from a checkpoint or a stage-1 file")
    add(
        "--teacher",
        default=None,
        help="a trained probe checkpoint whose visual tokens stage 1 also regresses to",
    )
    add(
        "--init-lm",
        default=None,
        help="a trained probe checkpoint (any architecture) to start the LM from",
    )
    add("--seed", type=int, default=0)
    add("--batch", type=int, default=16)
    add("--lr", type=float, default=1e-3)
    add("--warmup", type=int, default=100)
    add("--steps", type=int, default=2000, help="stage 2 (answers) steps")
    add("--eval-every", type=int, default=150)
    add("--lm-aux", type=float, default=0.3, help="weight of the hop targets")
    add(
        "--position-aux",
        type=float,
        default=0.0,
        help="weight of the row/column targets of visual tokens after LM layer 1",
    )
    add(
        "--count-ratio",
        type=float,
        default=0.0,
        help="weight of the count head's matched/sink log-ratio error (x --lm-aux)",
    )
    add("--vision-steps", type=int, default=400, help="stage 1 (tower) steps; 0 skips")
    add("--vision-batch", type=int, default=32)
    add("--vision-lr", type=float, default=2e-3)
    add(
        "--no-curriculum",
        action="store_true",
        help="all object counts from the start (for runs resumed with --init)",
    )
    add(
        "--oversample",
        nargs="*",
        default=(),
        choices=(*FAMILIES, *TRAINING_FAMILIES),
        help="families to train on twice as often (the slow ones); count-present: "
        "count questions about a shape in the scene (larger counts more often)",
    )
    add("--tune-vision", action="store_true", help="train the tower in stage 2 too")
    add("--arch", default="llava", choices=ARCHS, help="mlx-vlm model type to train")
    add(
        "--rope-theta",
        type=float,
        default=None,
        help="LM RoPE base (default: llava 1e4, qwen2_vl 1e6 as Qwen2-VL)",
    )
    add("--width", type=int, default=128)
    add("--vision-layers", type=int, default=2)
    add("--text-layers", type=int, default=3)
    return p


_T0 = time.time()


def main(argv=None):
    """CLI entry point; ValueError on flags that cannot work."""
    args = configure_parser().parse_args(argv)
    for name in ("batch", "steps", "eval_every", "width", "vision_batch"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.vision_steps < 0:
        raise ValueError("--vision-steps must be at least 0")
    step = 64 if args.arch == "qwen2_vl" else 32  # head size (Qwen's tower: half)
    if args.width % step:
        raise ValueError(
            f"--width must be a multiple of {step} (head size), got {args.width}"
        )
    if args.text_layers < 3:
        raise ValueError("--text-layers must be at least 3 (gather, look up, answer)")
    train(args)


if __name__ == "__main__":
    main()
