"""Smoke test of the speed/memory benchmark on toy configs: the rows' shape, not speed;
and the paired ratios on hand-made measurements.

Benchmarks are not tests: nothing here compares a wall-clock time to a threshold.
"""

import json
import statistics
import sys

import pytest

from restore_mlx.bench import configs as bench_configs
from restore_mlx.bench import run as bench
from restore_mlx.bench.report import (
    add_ratios,
    markdown,
    plot,
    rows_from_log,
    summarize,
    targets,
)

REQUIRED = (
    "model", "method", "variant", "keep", "vision_s", "reduce_s", "prefill_s",
    "ttft_s", "decode_tps", "peak_memory_gb", "kv_bytes",
)  # fmt: skip


@pytest.fixture(scope="module")
def doc():
    models = ("tiny-llava", "tiny-qwen2-vl")
    return bench.run(
        models, (1.0, 0.5), ("divprune", "pool"), 1, 3, log=lambda *a: None
    )


def test_one_row_per_model_method_variant_keep(doc):
    rows = doc["rows"]
    for row in rows:
        assert set(REQUIRED) <= set(row)
    keys = {(r["model"], r["method"], r["variant"], r["keep"]) for r in rows}
    # Per model: unpatched, one shared keep-1.0 row, 2 methods x 2 variants at 0.5.
    assert len(keys) == len(rows) == 2 * (1 + 1 + 2 * 2)
    for model in ("tiny-llava", "tiny-qwen2-vl"):
        assert (model, "none", "none", 1.0) in keys
        assert (model, "divprune", "restore", 1.0) in keys
        for method in ("divprune", "pool"):
            for variant in ("base", "restore"):
                assert (model, method, variant, 0.5) in keys


def test_values_are_plausible(doc):
    for r in doc["rows"]:
        assert r["ttft_s"] > 0 and r["prefill_s"] > 0 and r["decode_tps"] > 0
        assert r["ttft_s"] >= r["vision_s"]
        assert r["peak_memory_gb"] > 0 and r["kv_bytes"] > 0
        # The KV cache holds exactly the (reduced) prompt, at unpatched bytes/token.
        assert r["kv_per_token_x"] == pytest.approx(1.0)
        if r["method"] != "none" and r["keep"] == 0.5:
            assert r["kept_tokens"] == round(r["visual_tokens"] / 2)
            assert r["kv_x"] < 1.0
            assert r["reduce_s"] > 0


def test_report_renders(doc, tmp_path):
    text = markdown(doc)
    assert "### tiny-llava" in text and "### tiny-qwen2-vl" in text
    assert len(targets(doc["rows"])) == 5
    json.dumps(doc)  # the document is plain JSON
    pytest.importorskip("matplotlib")
    assert plot(doc, tmp_path / "bench.png").stat().st_size > 0


def test_cli_writes_files(tmp_path):
    out = tmp_path / "b.json"
    bench.main(
        ["--model", "tiny-llava", "--keep", "0.25", "--methods", "divprune",
         "--repeats", "1", "--max-tokens", "2", "--json", str(out),
         "--markdown", str(tmp_path / "b.md")]
    )  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert {r["method"] for r in rows} == {"none", "divprune"}
    assert (tmp_path / "b.md").read_text().startswith("Machine:")


def test_builtin_configs_are_named():
    for name in bench_configs.DEFAULT_MODELS:
        config, side, about = bench_configs.get_config(name)
        assert config["model_type"] in ("llava_onevision", "qwen2_vl") and side > 0
        assert about
    with pytest.raises(ValueError):
        bench_configs.get_config("no-such-model")


# Hand-made measurements of one model, 3 repeats, where the pairing matters: the
# medians of base and RESTORE are equal, the per-repeat pairs are not.
BASE = dict(ttft=[1.0, 1.9, 2.0], vision=[0.5, 0.5, 0.5], decode=[10.0, 20.0, 30.0])
RESTORE = dict(ttft=[1.01, 2.2, 1.9], vision=[0.5, 0.6, 0.4], decode=[9.9, 30.0, 19.0])
REF_DECODE = [10.0, 30.0, 20.0]


def _measure(r, ttft, vision, decode, kept=8):
    return dict(
        repeat=r, vision_s=vision, reduce_s=0.0, setup_s=0.0, prefill_s=ttft - vision,
        ttft_s=ttft, decode_tps=decode, peak_memory_gb=1.0, peak_extra_gb=0.1,
        kv_bytes=1000 * (12 + kept), kept_tokens=kept, prompt_tokens=12 + kept,
    )  # fmt: skip


def _series(values, kept):
    """Measurements of one job, repeat by repeat, from {ttft, vision, decode} lists."""
    rows = zip(values["ttft"], values["vision"], values["decode"])
    return [_measure(r, *v, kept=kept) for r, v in enumerate(rows)]


def _samples(drop=()):
    """{job: [measurements]}; ``drop`` leaves (job, repeat) out, as a run cut short."""
    unpatched = dict(ttft=[3.0] * 3, vision=[0.5] * 3, decode=[9.0] * 3)
    samples = {
        ("none", 1.0, "none"): _series(unpatched, 16),
        ("divprune", 0.5, "base"): _series(BASE, 8),
        ("divprune", 0.5, "restore"): _series(RESTORE, 8),
        ("ref", 0.5, "ref"): [
            {"repeat": r, "decode_tps": d} for r, d in enumerate(REF_DECODE)
        ],
    }
    return {
        job: [m for m in ms if (job, m["repeat"]) not in drop]
        for job, ms in samples.items()
    }


def _restore_row(rows):
    return next(r for r in rows if r["variant"] == "restore")


def _paired_overhead(repeats):
    b, a = BASE, RESTORE
    return statistics.median(
        ((a["ttft"][i] - a["vision"][i]) - (b["ttft"][i] - b["vision"][i]))
        / b["ttft"][i]
        for i in repeats
    )


def test_restore_vs_base_is_the_median_of_per_repeat_pairs():
    row = _restore_row(add_ratios(summarize("m", 16, _samples())))
    assert row["restore_overhead"] == pytest.approx(_paired_overhead(range(3)))
    assert row["ttft_vs_base"] == pytest.approx(1.01)  # 1.01/1.0, 2.2/1.9, 1.9/2.0
    assert row["decode_vs_base"] == pytest.approx(0.99)  # 0.99, 1.5, 0.63
    assert row["decode_vs_ref"] == pytest.approx(0.99)  # 0.99, 1.0, 0.95
    # Ratios of the medians would read differently: the pairing is what is tested.
    med = statistics.median
    after = med(RESTORE["ttft"]) - med(RESTORE["vision"])
    after -= med(BASE["ttft"]) - med(BASE["vision"])
    assert row["restore_overhead"] != pytest.approx(after / med(BASE["ttft"]))
    assert row["decode_vs_base"] != pytest.approx(
        med(RESTORE["decode"]) / med(BASE["decode"])
    )
    assert row["decode_vs_ref"] != pytest.approx(
        med(RESTORE["decode"]) / med(REF_DECODE)
    )
    # The per-repeat values stay in the row.
    assert row["samples"]["ttft_s"] == RESTORE["ttft"]
    assert row["samples"]["decode_tps_ref"] == REF_DECODE
    assert row["decode_tps"] == 19.0  # plain columns stay medians


def _log_lines(samples):
    """The lines bench_subject logs: one per measurement, odd repeats reversed."""
    jobs = list(samples)
    lines = []
    for r in range(3):
        for job in jobs if r % 2 == 0 else jobs[::-1]:
            for m in samples[job]:
                if m["repeat"] == r:
                    lines.append(json.dumps({"model": "m", "job": job, **m}))
        lines.append(f"[m] repeat {r + 1}/3: 1 s")
    return lines


def test_rows_from_log_pair_by_repeat_number():
    rows = add_ratios(rows_from_log(_log_lines(_samples())))
    assert _restore_row(rows)["restore_overhead"] == pytest.approx(
        _paired_overhead(range(3))
    )
    # A run cut short: the base row misses repeat 0, so RESTORE's repeat 0 pairs with
    # nothing (not with the base's first logged measurement, which is repeat 1).
    cut = _samples(drop={(("divprune", 0.5, "base"), 0)})
    row = _restore_row(add_ratios(rows_from_log(_log_lines(cut))))
    assert row["restore_overhead"] == pytest.approx(_paired_overhead((1, 2)))


@pytest.fixture(scope="module")
def reused():
    """The smoke run again with --reuse-vision and 2 repeats; its log lines too."""
    lines = []
    models = ("tiny-llava", "tiny-qwen2-vl")
    doc = bench.run(
        models, (1.0, 0.5), ("divprune", "pool"), 2, 3,
        log=lambda *a: lines.append(" ".join(map(str, a))), reuse_vision=True,
    )  # fmt: skip
    return doc, lines


def test_reuse_vision_measures_the_same_prompts(doc, reused):
    rows = reused[0]["rows"]
    key = ("model", "method", "variant", "keep")
    plain = {tuple(r[k] for k in key): r for r in doc["rows"]}
    assert {tuple(r[k] for k in key) for r in rows} == set(plain)
    for r in rows:
        p = plain[tuple(r[k] for k in key)]
        for k in ("kv_bytes", "kept_tokens", "prompt_tokens"):
            assert r[k] == p[k], (k, r)


def test_reuse_vision_adds_one_tower_time_per_repeat_to_every_row(reused):
    doc, _ = reused
    assert doc["settings"]["reuse_vision"] is True
    for model in ("tiny-llava", "tiny-qwen2-vl"):
        rows = [r for r in doc["rows"] if r["model"] == model]
        for i in range(2):
            # One timing of the tower per repeat, the same for every row of it.
            assert len({r["samples"]["vision_s"][i] for r in rows}) == 1
        for r in rows:
            parts = r["vision_s"] + r["reduce_s"] + r["setup_s"] + r["prefill_s"]
            assert r["ttft_s"] == pytest.approx(parts)
    assert "timed separately, once per repeat" in markdown(doc)


def test_reuse_vision_rows_never_run_the_tower(monkeypatch):
    from restore_mlx.bench.subject import load_subject
    from restore_mlx.integration import encode_image

    s = load_subject("tiny-qwen2-vl")
    reuse = bench.Reuse(encode_image(s.model, s.sample), vision_s=0.25)

    def boom(*args, **kwargs):
        raise AssertionError("the vision tower ran")

    monkeypatch.setattr(type(s.model.vision_tower), "__call__", boom)
    unpatched = bench.run_unpatched(s, 2, 2048, reuse)
    restored = bench.run_restore(s, "divprune", 0.5, "restore", 2, 2048, reuse)
    for out in (unpatched, restored):
        assert out["vision_s"] == 0.25 and out["ttft_s"] > 0.25


def test_from_log_rebuilds_a_reuse_vision_run(reused, tmp_path):
    doc, lines = reused
    log = tmp_path / "run.log"
    log.write_text("\n".join(lines) + "\n")
    out = tmp_path / "b.json"
    bench.main(["--from-log", str(log), "--json", str(out)])
    again = json.loads(out.read_text())
    assert again["settings"]["reuse_vision"] is True
    key = ("model", "method", "variant", "keep")
    want = {tuple(r[k] for k in key): r for r in doc["rows"]}
    for r in again["rows"]:
        w = want[tuple(r[k] for k in key)]
        for k in ("restore_overhead", "decode_vs_base", "decode_vs_ref", "ttft_s"):
            assert r.get(k) == pytest.approx(w.get(k)), (k, r)


def test_plot_without_matplotlib_fails_before_measuring(tmp_path, capsys, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("measured although the plot cannot be drawn")

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(bench, "run", no_work)
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "tiny-llava", "--plot", str(tmp_path / "b.png")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("python -m restore_mlx.bench: error: --plot needs matplotlib")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("spec", ["divprune", "divprune:half", "a:b:c"])
def test_bad_profile_spec_is_one_line_naming_the_form(spec, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--model", "tiny-llava", "--profile", spec])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and "expected METHOD:KEEP" in err[-1]
    assert "_profile_spec" not in "\n".join(err)


def test_help_names_the_module_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m restore_mlx.bench")
    assert "(default: 1.0,0.75,0.5,0.25,0.11)" in out
    assert "(default: divprune,pool)" in out and "(default: 2048)" in out
    assert bench.configure_parser().parse_args([]).keep == bench.DEFAULT_KEEP


def test_prefill_bias_is_built_per_chunk():
    # The bias a prefill holds is the largest chunk's rows, never [P, P] once the
    # prompt is longer than a chunk; layer 0 has its own (uniform-size) copy.
    from conftest import BUILDERS

    from restore_mlx.bench.timing import bias_bytes, prefill_chunks
    from restore_mlx.integration import apply, prepare_tokens

    model, sample = BUILDERS["llava_onevision"]()
    apply(model, "server-70")
    prompt = prepare_tokens(model, sample).prompt
    P = prompt.length
    assert prefill_chunks(P, 8)[-1] == (P - 1, P)
    assert bias_bytes(prompt, None) == 2 * P * P * 4  # one shot: [P, P], twice
    chunks = prefill_chunks(P, 8)
    assert all(b - a <= 8 for a, b in chunks) and chunks[0][0] == 0
    assert all(b == c for (_, b), (c, _) in zip(chunks, chunks[1:]))
    largest = max((b - a) * b for a, b in chunks)  # float32 rows of keys so far
    assert bias_bytes(prompt, 8) == 2 * largest * 4
    assert bias_bytes(prompt, 8) < P * P * 4
    apply(model, keep=1.0)
    assert bias_bytes(prepare_tokens(model, sample).prompt, 8) == 0
