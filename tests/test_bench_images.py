"""The benchmark on a prompt with several images (``--images``): one request holding
every image, each reduced on its own within the shared budget, the same columns as
ratios against the unreduced run. Shapes only; nothing compares wall-clock times."""

import pytest

import restore_mlx.integration as ri
from restore_mlx.bench import run as bench
from restore_mlx.bench.report import markdown
from restore_mlx.bench.subject import load_subject


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-llava", "tiny-gemma3"])
def test_two_images_in_one_prompt_each_reduced_on_its_own(name):
    one, two = load_subject(name), load_subject(name, images=2)
    assert two.visual_tokens == 2 * one.visual_tokens
    text = one.prompt_tokens - one.visual_tokens
    specials = 2 if name != "tiny-llava" else 0  # start/end markers per image
    assert two.prompt_tokens == text + specials + 2 * one.visual_tokens
    ri.apply(two.model, method="divprune", keep=0.5)
    prepared = ri.prepare_tokens(two.model, two.sample)
    half = one.visual_tokens // 2
    assert prepared.per_image() == [(one.visual_tokens, half)] * 2
    assert prepared.prompt_tokens == two.prompt_tokens_at(0.5)


def test_rows_of_a_two_image_run_report_ratios_against_the_unreduced_run():
    doc = bench.run(
        ["tiny-llava"], (1.0, 0.5), ("divprune",), 1, 2, log=lambda *a: None, images=2
    )
    assert doc["settings"]["images"] == 2
    rows = {(r["method"], r["keep"], r["variant"]): r for r in doc["rows"]}
    assert rows[("none", 1.0, "none")]["kept_tokens"] == 128  # 2 x 64
    reduced = rows[("divprune", 0.5, "restore")]
    assert reduced["kept_tokens"] == 64 and reduced["visual_tokens"] == 128
    for column in ("ttft_x", "prefill_x", "peak_memory_x", "kv_x"):
        assert reduced[column] > 0
    assert "2 image(s) per prompt" in markdown(doc)


def test_budget_policy_reaches_every_reduced_row(monkeypatch):
    from restore_mlx.bench import rows

    seen, original = [], rows.apply
    monkeypatch.setattr(
        rows, "apply", lambda *a, **kw: seen.append(kw) or original(*a, **kw)
    )
    doc = bench.run(
        ["tiny-llava"], (1.0, 0.5), ("divprune",), 1, 2, log=lambda *a: None,
        images=2, budget_policy="global",
    )  # fmt: skip
    assert seen and {kw["budget_policy"] for kw in seen} == {"global"}
    reduced = {(r["method"], r["keep"], r["variant"]): r for r in doc["rows"]}
    assert reduced[("divprune", 0.5, "restore")]["kept_tokens"] == 64  # 2 x 64 / 2
    assert doc["settings"]["budget_policy"] == "global"
    assert "2 image(s) per prompt (global budget)" in markdown(doc)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "tiny-llava", "--images", "0"], "--images must be at least 1"),
        (["--model", "smolvlm-256m", "--images", "2"], "measure one image"),
        (["--model", "tiny-llava", "--budget-policy", "even"], "invalid choice"),
    ],
)
def test_bad_image_counts_fail_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
