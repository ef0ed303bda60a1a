"""Validation during training: answer accuracy per family, and whether each learned
hop (hop heads, visual tokens' places, the tower's cell heads) is there yet."""

import mlx.core as mx
import numpy as np

from .losses import answer_pass, make_batch
from .model import visual_features
from .scenes import FAMILIES, MAX_OBJECTS


def evaluate(trainer, tok, seed, per_family=48, objects=(2, MAX_OBJECTS)):
    """Validation accuracy per family (argmax over the whole vocabulary), and of the
    hop heads where the question has a target: is a hop learned?"""
    n = per_family * len(FAMILIES)
    hits = {f: [] for f in (*FAMILIES, "lookup", "first", "gathered", "where")}
    for start in range(0, n, 64):
        (pix, ids, pos, answers, labels, targets), fams = make_batch(
            tok, "val", seed, start, min(64, n - start), objects, model=trainer.model
        )
        feats = visual_features(trainer.model, pix)
        logits, states = answer_pass(trainer, feats, ids, pos)
        pred = mx.argmax(logits[:, 0], axis=-1)
        for f, ok in zip(fams, (pred == answers[:, 0]).tolist()):
            hits[f].append(ok)
        for col, (name, f, h) in enumerate(trainer.lm_aux.columns(states)):
            t = np.asarray(targets[:, col])
            p = np.asarray(mx.argmax(f(h), axis=-1))
            hits[name].extend((p == t)[t > 0].tolist())
        # Does every visual token know its cell after layer 1 (row and column)?
        row, col = (mx.argmax(f(states["visual"][0]), -1) for f in trainer.lm_aux.where)
        where = (row == labels[:, 2]) & (col == labels[:, 3])
        hits["where"].extend(np.asarray(where).reshape(-1).tolist())
    return {f: float(np.mean(v)) for f, v in hits.items() if v}


def aux_accuracy(trainer, tok, seed, n=64):
    """Per-token accuracy of the cell heads on validation scenes, and per cell by
    majority vote over the cell's 3 x 3 tokens (shape needs the neighbours)."""
    (pix, _, _, _, labels, _), _ = make_batch(
        tok, "val", seed, 0, n, (1, MAX_OBJECTS), model=trainer.model
    )
    heads = trainer.aux(visual_features(trainer.model, pix))
    out = {}
    for i, (k, h) in enumerate(zip(("color", "shape", "row", "col"), heads)):
        pred = mx.argmax(h, -1)
        out[k] = round((pred == labels[:, i]).mean().item(), 4)
        if k in ("color", "shape"):
            votes = np.asarray(pred).reshape(n, 4, 3, 4, 3).transpose(0, 1, 3, 2, 4)
            truth = np.asarray(labels[:, i]).reshape(n, 4, 3, 4, 3)[:, :, 0, :, 0]
            flat = votes.reshape(n, 4, 4, 9)
            major = np.apply_along_axis(lambda v: np.bincount(v).argmax(), -1, flat)
            obj = truth > 0  # empty cells are most cells and easy: score objects only
            out[k + "_object"] = round(float((major == truth)[obj].mean()), 4)
    return out
