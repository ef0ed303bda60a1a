"""Smoke test of the speed/memory benchmark on toy configs: the rows' shape, not speed.

Benchmarks are not tests: nothing here compares a wall-clock time to a threshold.
"""

import json

import pytest

from restore_mlx import bench, bench_configs
from restore_mlx.bench_report import markdown, plot, targets

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
        assert config["model_type"] in ("llava", "qwen2_vl") and side > 0 and about
    with pytest.raises(ValueError):
        bench_configs.get_config("no-such-model")
