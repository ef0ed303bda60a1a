"""The probe's data generator, tokenizer, checkpoint files and training script."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.probe.questions import holds, make_example, make_set  # noqa: E402
from restore_mlx.probe.scenes import GRID, IMAGE_SIZE, MAX_OBJECTS  # noqa: E402
from restore_mlx.probe.vocab import IMAGE, build_tokenizer, normalize  # noqa: E402

SHIPPED = Path(__file__).resolve().parents[1] / "examples" / "probe-model"


def test_examples_are_reproducible_and_splits_differ():
    a = make_example("train", 3, 7, "count")
    b = make_example("train", 3, 7, "count")
    assert np.array_equal(a.image, b.image) and a.question == b.question
    c = make_example("test", 3, 7, "count")
    assert not np.array_equal(a.image, c.image)
    d = make_example("train", 4, 7, "count")
    assert not np.array_equal(a.image, d.image)


def test_scene_invariants():
    for e in make_set("val", 0, 30):
        cells = {(o.row, o.col) for o in e.objects}
        kinds = {(o.color, o.shape) for o in e.objects}
        assert len(cells) == len(kinds) == len(e.objects)
        assert 2 <= len(e.objects) <= MAX_OBJECTS
        assert all(0 <= r < GRID and 0 <= c < GRID for r, c in cells)
        assert (
            e.image.shape == (IMAGE_SIZE, IMAGE_SIZE, 3) and e.image.dtype == np.uint8
        )


def _where(words):
    return int(words[words.index("row") + 1]) - 1, int(
        words[words.index("column") + 1]
    ) - 1


def _named(objects, color, shape):
    return next(o for o in objects if o.color == color and o.shape == shape)


def test_answers_follow_from_the_objects():
    for e in make_set("test", 1, 40):
        w = e.question.split()
        objs = e.objects
        if e.family == "attribute":
            obj = next(o for o in objs if (o.row, o.col) == _where(w))
            assert e.answer == (obj.color if w[1] == "color" else obj.shape)
        elif e.family == "location":
            obj = _named(objs, w[4], w[5])
            assert e.answer == str((obj.row if w[1] == "row" else obj.col) + 1)
        elif e.family == "count":
            if w[3] == "objects":
                n = sum(o.color == w[2] for o in objs)
            else:
                n = sum(
                    o.shape + ("es" if o.shape == "cross" else "s") == w[2]
                    for o in objs
                )
            assert e.answer == str(n)
        else:
            a = _named(objs, w[2], w[3])
            rel = w[4]
            b = _named(objs, *w[-3:-1])
            assert e.answer == ("yes" if holds(a, rel, b) else "no")


def test_relation_answers_are_balanced():
    answers = [e.answer for e in make_set("train", 0, 200, families=("relation",))]
    assert 0.4 < answers.count("yes") / len(answers) < 0.6


def test_object_pixels_carry_the_object_colour():
    e = make_example("test", 0, 0, "attribute", objects=(1, 1), clutter=0)
    (o,) = e.objects
    cell = e.image[o.row * 24 : (o.row + 1) * 24, o.col * 24 : (o.col + 1) * 24]
    assert (cell != 235).any(axis=-1).sum() > 100  # the shape is drawn in its cell
    rest = e.image.copy()
    rest[o.row * 24 : (o.row + 1) * 24, o.col * 24 : (o.col + 1) * 24] = 235
    assert (rest == 235).all()  # and nowhere else without clutter


def test_bad_generator_input_raises():
    with pytest.raises(ValueError, match="split"):
        make_example("dev", 0, 0, "count")
    with pytest.raises(ValueError, match="family"):
        make_example("test", 0, 0, "colour")
    with pytest.raises(ValueError, match="object count"):
        make_example("test", 0, 0, "count", objects=(0, 9))


def test_every_question_and_answer_is_in_vocabulary():
    tok = build_tokenizer()
    unk = tok.token_to_id("<unk>")
    for e in make_set("train", 5, 50):
        assert unk not in tok.encode(IMAGE + e.question).ids
        assert tok.token_to_id(e.answer) is not None
    assert tok.encode(IMAGE * 3 + "how many").tokens == [IMAGE] * 3 + ["how", "many"]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from restore_mlx.probe.model import write_random_checkpoint

    path = tmp_path_factory.mktemp("probe")
    write_random_checkpoint(path)
    return path


def test_checkpoint_loads_and_processor_matches_training(tiny_checkpoint):
    from mlx_vlm.prompt_utils import apply_chat_template
    from mlx_vlm.utils import load
    from PIL import Image

    model, proc = load(str(tiny_checkpoint))
    e = make_example("test", 0, 1, "relation")
    pix = proc.image_processor(Image.fromarray(e.image), return_tensors="np")[
        "pixel_values"
    ]
    expected = normalize(e.image[None]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(np.asarray(pix), expected, atol=1e-6)
    prompt = apply_chat_template(proc, model.config, e.question, num_images=1)
    assert prompt == IMAGE + e.question
    assert proc.tokenizer(prompt)["input_ids"] == build_tokenizer().encode(prompt).ids


def test_training_writes_a_loadable_checkpoint_and_resumes(tmp_path):
    from mlx_vlm.utils import load

    from restore_mlx.probe import train

    out = tmp_path / "m"
    tiny = "--width 32 --vision-layers 1 --text-layers 3 --batch 4 --vision-batch 4"
    tiny = [*tiny.split(), *"--steps 2 --eval-every 2 --warmup 1".split()]
    train.main(["--out", str(out), "--vision-steps", "2", *tiny])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["text_config"]["hidden_size"] == 32
    model, _ = load(str(out))
    assert model.config.model_type == "llava"
    stage1 = tmp_path / "m-stage1.safetensors"
    assert stage1.exists()
    train.main(
        [
            "--out",
            str(tmp_path / "m2"),
            "--init",
            str(stage1),
            "--vision-steps",
            "0",
            *tiny,
        ]
    )
    assert (tmp_path / "m2" / "model.safetensors").exists()


def test_hop_targets_follow_the_question():
    from restore_mlx.probe.targets import GATHER, LOOKUP, QTYPES, question_targets

    names = [n for n, _ in GATHER + LOOKUP]
    for e in make_set("train", 2, 20):
        t = dict(zip(names, question_targets(e.question, e.objects).tolist()))
        assert all(0 <= v < k for v, (_, k) in zip(t.values(), GATHER + LOOKUP))
        w = e.question.split()
        if e.family == "relation":
            b = next(o for o in e.objects if (o.color, o.shape) == (w[-3], w[-2]))
            assert (t["m_row"], t["m_col"]) == (b.row + 1, b.col + 1)
            assert QTYPES[t["qtype"] - 1] == w[4]
        elif e.family == "count":
            assert t["count"] == int(e.answer) + 1
        elif e.family == "location":
            assert str(t["l_row"] if w[1] == "row" else t["l_col"]) == e.answer


def test_training_rejects_bad_flags():
    from restore_mlx.probe import train

    with pytest.raises(ValueError, match="width"):
        train.main(["--width", "48"])
    with pytest.raises(ValueError, match="text-layers"):
        train.main(["--text-layers", "2"])


def test_cell_labels_cover_cells():
    from restore_mlx.probe.losses import cell_labels

    e = make_example("test", 0, 2, "count", objects=(1, 1))
    labels = cell_labels(e.objects)
    (o,) = e.objects
    assert labels.shape == (4, 144)
    assert (labels[0] > 0).sum() == 9 and (labels[1] > 0).sum() == 9  # 3 x 3 patches
    assert set(labels[2][labels[0] > 0]) == {o.row} and set(
        labels[3][labels[0] > 0]
    ) == {o.col}


@pytest.mark.skipif(
    not (SHIPPED / "model.safetensors").exists(), reason="no trained probe"
)
def test_shipped_probe_beats_the_answer_priors():
    """The shipped probe (54% validation accuracy, short of the 95% goal) must at least
    use the image: beat, on fresh questions, the best constant answer per family."""
    from collections import Counter

    import mlx.core as mx
    from mlx_vlm.utils import load

    from restore_mlx.probe.model import final_hidden, visual_features

    model, _ = load(str(SHIPPED))
    tok = build_tokenizer()
    items = make_set("test", 12345, 25)
    pix = mx.array(normalize(np.stack([e.image for e in items])))
    feats = visual_features(model, pix)
    hits = 0
    for i, e in enumerate(items):
        ids = mx.array([tok.encode(e.question).ids])
        h = final_hidden(model, feats[i : i + 1], ids)[:, -1]
        pred = int(mx.argmax(model.language_model.lm_head(h), -1).item())
        hits += tok.id_to_token(pred) == e.answer
    prior = 0
    for fam in {e.family for e in items}:
        answers = Counter(e.answer for e in items if e.family == fam)
        prior += answers.most_common(1)[0][1]
    assert hits >= prior + 0.1 * len(items)
