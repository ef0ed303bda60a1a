"""Full-token accuracy of a probe checkpoint on fresh test questions, fast.

    python -m restore_mlx.eval.probe.accuracy --model examples/probe-model --seed 1000 --samples 250

Loads the checkpoint as a user does (``mlx_vlm.utils.load``), runs the tower once per
batch of scenes and reads the argmax answer at the last question token: the unreduced
model's answer, as ``python -m restore_mlx.eval`` scores it (method "none"), without the
220 reduced configurations per question.
"""

import argparse
import json

import numpy as np

from .model import arch_of, final_hidden, pixel_inputs, visual_features
from .questions import make_set
from .scenes import FAMILIES
from .vocab import build_tokenizer


def answer_accuracy(model, items, batch: int = 64, by_count=False) -> dict:
    """Accuracy per family and overall ("all") of ``model`` on probe ``items``; with
    ``by_count`` also of the count questions per true answer ("count=2": the count
    family is mostly answers 0-2, so its mean hides how larger counts fare)."""
    import mlx.core as mx

    arch = arch_of(model)
    tok = build_tokenizer(arch)
    hits, answers = {}, {}
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        pix = mx.array(pixel_inputs(np.stack([e.image for e in chunk]), arch))
        feats = visual_features(model, pix)
        for i, e in enumerate(chunk):
            ids = mx.array([tok.encode(e.question).ids])
            h = final_hidden(model, feats[i : i + 1], ids)[:, -1]
            pred = int(mx.argmax(model.language_model.lm_head(h), -1).item())
            hit = tok.id_to_token(pred) == e.answer
            hits.setdefault(e.family, []).append(hit)
            if by_count and e.family == "count":
                answers.setdefault(f"count={e.answer}", []).append(hit)
    out = {f: float(np.mean(v)) for f, v in hits.items()}
    out["all"] = float(np.mean([x for v in hits.values() for x in v]))
    for key in sorted(answers):
        out[key] = {"n": len(answers[key]), "accuracy": float(np.mean(answers[key]))}
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="examples/probe-model")
    p.add_argument("--seed", type=int, default=1000, help="test-split seed")
    p.add_argument("--samples", type=int, default=250, help="questions per family")
    p.add_argument(
        "--families", nargs="+", default=FAMILIES, choices=FAMILIES, metavar="FAMILY"
    )
    p.add_argument(
        "--by-count",
        action="store_true",
        help="also the count questions' accuracy per true answer",
    )
    args = p.parse_args(argv)
    from mlx_vlm.utils import load

    model, _ = load(args.model)
    items = make_set("test", args.seed, args.samples, tuple(args.families))
    acc = answer_accuracy(model, items, by_count=args.by_count)
    print(json.dumps({"model": args.model, "seed": args.seed, "n": len(items), **acc}))


if __name__ == "__main__":
    main()
