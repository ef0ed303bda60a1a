"""Question sets for the eval harness: the probe generator or a benchmark JSONL.

Each item is a dict: ``id``, ``image`` (a path or a PIL image), ``question``,
``answer`` and ``family`` (the question family or benchmark category, used to split
the results).
"""

import json
from pathlib import Path

from .questions import make_set
from .scenes import FAMILIES

# Field names used by POPE / GQA-style files, first match wins.
QUESTION_KEYS = ("question", "text", "prompt")
ANSWER_KEYS = ("answer", "label", "gt_answer")
IMAGE_KEYS = ("image", "image_path", "imageId", "image_id")
FAMILY_KEYS = ("family", "category", "type")
ID_KEYS = ("question_id", "id", "questionId")


def probe_items(seed: int, samples: int, families=FAMILIES) -> list:
    """``samples`` fresh test questions per family from the probe generator."""
    from PIL import Image

    items = []
    for i, e in enumerate(make_set("test", seed, samples, families)):
        items.append(
            dict(
                id=f"probe-{seed}-{i}",
                image=Image.fromarray(e.image),
                question=e.question,
                answer=e.answer,
                family=e.family,
            )
        )
    return items


def _first(rec: dict, keys, what: str, where: str, required: bool = True):
    for k in keys:
        if rec.get(k) is not None:
            return rec[k]
    if required:
        raise ValueError(
            f"{where}: no {what} field (expected one of {', '.join(keys)})"
        )
    return None


def _image_path(value, root: Path, where: str) -> str:
    path = Path(str(value))
    if not path.is_absolute():
        path = root / path
    if not path.suffix and not path.exists():
        # GQA lists image ids without the extension.
        hits = [
            path.with_suffix(s)
            for s in (".jpg", ".png", ".jpeg")
            if path.with_suffix(s).exists()
        ]
        path = hits[0] if hits else path
    if not path.exists():
        raise ValueError(f"{where}: image not found: {path}")
    return str(path)


def read_jsonl(path, image_root=None, limit=None) -> list:
    """Items from a JSONL file with one question per line (POPE / GQA-style fields).

    Image paths are taken relative to ``image_root``, by default the file's folder.
    ``limit`` keeps the first ``limit`` questions. Bad lines raise ValueError naming the
    line.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"question file not found: {path}")
    root = Path(image_root) if image_root is not None else path.parent
    items = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object per line")
        question = str(_first(rec, QUESTION_KEYS, "question", where))
        answer = str(_first(rec, ANSWER_KEYS, "answer", where))
        image = _image_path(_first(rec, IMAGE_KEYS, "image", where), root, where)
        items.append(
            dict(
                id=str(_first(rec, ID_KEYS, "id", where, False) or f"line-{lineno}"),
                image=image,
                question=question,
                answer=answer,
                family=str(_first(rec, FAMILY_KEYS, "family", where, False) or "all"),
            )
        )
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise ValueError(f"{path}: no questions in the file")
    return items
