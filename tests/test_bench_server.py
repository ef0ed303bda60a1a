"""restore_mlx.bench.server end to end on the probe model (two loopback servers)."""

from pathlib import Path

from restore_mlx.bench import server as bench

ROOT = Path(__file__).resolve().parents[1]


def test_percentile_picks_the_nearest_rank():
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert bench.percentile(values, 50) == 3.0
    assert bench.percentile(values, 95) == 5.0
    assert bench.percentile(values, 0) == 1.0


def test_reduced_and_off_servers_answer_every_client():
    summary = bench.run(
        ROOT / "examples" / "probe-model",
        ROOT / "examples" / "probe-scene.png",
        clients=2,
        requests=1,
        rounds=1,
        max_tokens=2,
    )
    for mode in ("reduced", "off"):
        numbers = summary[mode]
        assert numbers["requests"] == 2
        assert 0 < numbers["ttft_p50_s"] <= numbers["ttft_p95_s"]
        assert numbers["peak_memory_mb"] > 0
    chat = summary["reduced"]["chat"]
    # Turn 2 of the reduced chat: a cached prefix (whole blocks of turn 1's prompt).
    assert chat["turn1"]["cached_tokens"] == 0
    assert chat["turn2"]["cached_tokens"] > 0
    assert chat["turn2"]["prompt_tokens_prefilled"] < 144  # the probe's image alone
    config = dict(model="probe", preset="mobile-50", clients=2, requests=1,
                  rounds=1, max_tokens=2)  # fmt: skip
    report = bench.table(summary, config)
    assert "| requests/s (median phase) |" in report and "| reduced |" in report
