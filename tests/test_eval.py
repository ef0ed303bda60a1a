"""The eval harness: metrics, the JSONL reader, reports, and a run on a tiny probe."""

import json
import os
import sys

import mlx.core as mx
import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.eval.probe.data import read_jsonl  # noqa: E402
from restore_mlx.eval.probe.metrics import (  # noqa: E402
    aggregate,
    cosine,
    is_correct,
    kl_divergence,
    normalize_answer,
)

VARIANTS = {"base", "restore", "positions", "calibration", "anchors", "flat-distance"}


def test_answer_matching():
    assert normalize_answer(" Yes.") == "yes"
    assert is_correct("Yes", "yes") and not is_correct("no", "yes")
    assert not is_correct("", "yes")
    assert is_correct("red", "red car", truncated=True)
    assert not is_correct("red", "red car") and not is_correct(
        "re", "red", truncated=True
    )


def test_cosine_and_kl():
    a = mx.array([[1.0, 2.0, 3.0]])
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-6)
    assert cosine(mx.array([1.0, 0.0]), mx.array([0.0, 2.0])) == pytest.approx(
        0.0, abs=1e-7
    )
    assert kl_divergence(a, a) == pytest.approx(0.0, abs=1e-6)
    p, q = np.array([1.0, 0.0, -1.0]), np.array([0.0, 1.0, 0.5])
    lp, lq = p - np.log(np.exp(p).sum()), q - np.log(np.exp(q).sum())
    want = float((np.exp(lp) * (lp - lq)).sum())
    assert kl_divergence(mx.array(p), mx.array(q)) == pytest.approx(want, rel=1e-5)
    with pytest.raises(ValueError, match="sizes"):
        kl_divergence(mx.zeros(3), mx.zeros(4))


def test_aggregate_means_per_family_and_all():
    base = dict(method="pool", variant="base", keep=0.5)
    recs = [
        dict(base, family="count", correct=True, cosine=1.0, kl=0.0),
        dict(base, family="count", correct=False, cosine=0.5, kl=1.0),
        dict(base, family="relation", correct=True, cosine=0.0, kl=2.0),
        dict(
            method="fastv",
            variant="base",
            keep=0.5,
            family="count",
            skipped="no scores",
        ),
    ]
    rows = {(r["method"], r["family"]): r for r in aggregate(recs)}
    assert (
        rows[("pool", "count")]["accuracy"] == 0.5 and rows[("pool", "count")]["n"] == 2
    )
    assert rows[("pool", "all")]["accuracy"] == pytest.approx(2 / 3)
    assert rows[("pool", "all")]["kl"] == pytest.approx(1.0)
    assert rows[("fastv", "count")]["skipped"] == "no scores"
    assert rows[("fastv", "count")]["accuracy"] is None


def _write_image(path):
    from PIL import Image

    from restore_mlx.eval.probe.questions import make_example

    e = make_example("test", 9, 0, "count")
    Image.fromarray(e.image).save(path)
    return e


def test_jsonl_reader_pope_and_gqa_fields(tmp_path):
    (tmp_path / "img").mkdir()
    _write_image(tmp_path / "img" / "a.png")
    lines = [
        {"question_id": 1, "image": "img/a.png", "text": "is there a red square?",
         "label": "yes", "category": "adversarial"},
        {"imageId": "img/a", "question": "what is it?", "answer": "square"},
    ]  # fmt: skip
    f = tmp_path / "q.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    items = read_jsonl(f)
    assert [i["family"] for i in items] == ["adversarial", "all"]
    assert items[0]["answer"] == "yes" and items[1]["image"].endswith("a.png")
    assert len(read_jsonl(f, limit=1)) == 1


@pytest.mark.parametrize(
    "line, match",
    [
        ("{not json", "line 1|:1"),
        ('{"image": "x.png", "answer": "a"}', "question"),
        ('{"image": "missing.png", "question": "q", "answer": "a"}', "not found"),
    ],
)
def test_jsonl_reader_errors_name_the_line(tmp_path, line, match):
    f = tmp_path / "bad.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(ValueError, match=match):
        read_jsonl(f)


def test_jsonl_reader_missing_or_empty_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        read_jsonl(tmp_path / "none.jsonl")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no questions"):
        read_jsonl(tmp_path / "e.jsonl")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from restore_mlx.eval.probe.model import write_random_checkpoint

    path = tmp_path_factory.mktemp("tiny-probe")
    write_random_checkpoint(path)
    return path


def _check_rows(doc, methods, keeps, families):
    rows = doc["rows"]
    for r in rows:
        for field in ("method", "variant", "keep", "family", "accuracy", "n"):
            assert field in r
        assert r["variant"] in VARIANTS
    full = [r for r in rows if r["method"] == "none"]
    assert {r["family"] for r in full} == {*families, "all"}
    assert all(r["cosine"] == pytest.approx(1.0, abs=1e-5) for r in full)
    reduced = [r for r in rows if r["method"] != "none" and r["family"] == "all"]
    assert {(r["method"], r["variant"], r["keep"]) for r in reduced} == {
        (m, v, k) for m in methods for v in VARIANTS for k in keeps
    }
    for r in reduced:
        assert 0 <= r["accuracy"] <= 1 and r["kl"] >= 0 and -1 <= r["cosine"] <= 1
        assert 0 <= r["visual_attention"] <= 1 + 1e-5


def test_eval_cli_on_a_jsonl_file(tiny, tmp_path, monkeypatch):
    from restore_mlx.eval import harness as ev

    # No plot asked for: runs to the end without matplotlib, draws nothing.
    monkeypatch.setitem(sys.modules, "matplotlib", None)

    (tmp_path / "img").mkdir()
    _write_image(tmp_path / "img" / "a.png")
    q = "how many circles are there ?"
    rec = [
        {"image": "img/a.png", "question": q, "answer": "1", "category": c}
        for c in ("count", "count", "other")
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(x) for x in rec))
    out = tmp_path / "res.json"
    data = str(tmp_path / "q.jsonl")
    flags = ["--methods", "pool", "divprune", "--keep", "0.5", "0.25"]
    ev.main(
        ["--model", str(tiny), "--data", data, *flags, "--json", str(out), "--quiet"]
    )
    doc = json.loads(out.read_text())
    _check_rows(doc, ["pool", "divprune"], [0.5, 0.25], ["count", "other"])
    assert doc["meta"]["questions"] == 3 and doc["meta"]["visual_tokens"] == 144
    assert out.with_suffix(".md").read_text().startswith("# Eval")
    assert not out.with_suffix(".png").exists()


def test_eval_plot_only_when_asked(tiny, tmp_path):
    pytest.importorskip("matplotlib")
    from restore_mlx.eval import harness as ev

    png = tmp_path / "acc.png"
    ev.main(["--model", str(tiny), "--samples", "1", "--methods", "pool",
             "--variants", "base", "restore", "--keep", "0.5", "--plot", str(png),
             "--quiet"])  # fmt: skip
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc.png"]


def test_eval_plot_without_matplotlib_fails_before_work(tmp_path, capsys, monkeypatch):
    from restore_mlx.eval import harness as ev

    def no_work(*args, **kwargs):
        raise AssertionError("evaluated although the plot cannot be drawn")

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(ev, "run", no_work)
    with pytest.raises(SystemExit) as e:
        ev.main(["--model", "unused", "--plot", str(tmp_path / "p.png")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "--plot needs matplotlib" in err
    assert list(tmp_path.iterdir()) == []


def test_eval_help_names_the_module_and_shows_defaults(capsys):
    from restore_mlx.eval import harness as ev

    with pytest.raises(SystemExit):
        ev.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m restore_mlx.eval")
    assert "(default: 25)" in out and "(default: 0.75 0.5 0.25 0.11)" in out


def test_eval_on_probe_questions_reports_skips(tiny, monkeypatch):
    from mlx_vlm.utils import load

    from restore_mlx.errors import UnsupportedMethod
    from restore_mlx.eval import harness as ev
    from restore_mlx.eval.probe.data import probe_items
    from restore_mlx.eval.probe.metrics import aggregate

    real = ev.prepare_tokens

    def fake(model, sample, *, config=None, encoded=None):
        if config is not None and config.method == "fastv" and config.keep < 1:
            raise UnsupportedMethod("fastv needs text attention")
        return real(model, sample, config=config, encoded=encoded)

    monkeypatch.setattr(ev, "prepare_tokens", fake)
    model, proc = load(str(tiny))
    items = probe_items(seed=3, samples=1)
    recs = ev.evaluate(model, proc, items, ["fastv", "uniform"], [0.25], progress=False)
    rows = aggregate(recs)
    skipped = [r for r in rows if r["method"] == "fastv"]
    assert skipped and all(
        r["skipped"] == "fastv needs text attention" for r in skipped
    )
    assert all(r.get("skipped") is None for r in rows if r["method"] == "uniform")
    kept = {"rows": [r for r in rows if r["method"] != "fastv"]}
    _check_rows(kept, ["uniform"], [0.25], [i["family"] for i in items])


def test_eval_reports_any_other_error(tiny, monkeypatch):
    # Only a method the architecture cannot run is skipped; a bug is never recorded.
    from mlx_vlm.utils import load

    from restore_mlx.eval import harness as ev
    from restore_mlx.eval.probe.data import probe_items

    def broken(model, sample, *, config=None, encoded=None):
        raise ValueError("a bug, not a skip")

    model, proc = load(str(tiny))
    items = probe_items(seed=3, samples=1)
    monkeypatch.setattr(ev, "prepare_tokens", broken)
    with pytest.raises(ValueError, match="a bug"):
        ev.evaluate(model, proc, items, ["uniform"], [0.25], progress=False)


@pytest.mark.parametrize(
    "flags, match",
    [(["--keep", "1.5"], "keep"), (["--samples", "0"], "samples"),
     (["--json", "/no/such/dir/x.json"], "json")],
)  # fmt: skip
def test_eval_cli_rejects_bad_flags(flags, match, capsys):
    from restore_mlx.eval import harness as ev

    with pytest.raises(SystemExit) as e:
        ev.main(["--model", "unused", *flags])
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_means_table_gives_mean_standard_error_and_wins_over_base():
    """Two methods at one budget: base 0.5 / 0.7, restore 0.6 / 0.7 -> restore's mean
    0.650 ± 0.050 (standard error over the two methods), better for 1, tied for 1."""
    from restore_mlx.eval.probe.report import markdown

    def row(method, variant, acc):
        return dict(
            method=method, variant=variant, keep=0.5, family="all", accuracy=acc
        )

    rows = [
        row("pool", "base", 0.5),
        row("tome", "base", 0.7),
        row("pool", "restore", 0.6),
        row("tome", "restore", 0.7),
    ]
    text = markdown(rows, {"model": "m"})
    assert "| base | 0.600 ± 0.100 |" in text
    assert "| restore | 0.650 ± 0.050 (1/1 of 2) |" in text
