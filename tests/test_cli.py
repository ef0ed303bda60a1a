"""restore_mlx.generate: the CLI end to end on tiny converted checkpoints, its errors,
and the library wrappers. Subprocesses only where the process boundary matters."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.bench.checkpoints import write_checkpoint, write_image  # noqa: E402
from restore_mlx.generate import main  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _python(*args):
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True
    )


def convert_4bit(arch, root, **sizes):
    """A tiny HF-layout ``arch`` checkpoint under ``root`` converted to 4-bit by
    ``python -m restore_mlx.convert`` in a subprocess: the converted folder."""
    hf = write_checkpoint(arch, root / "hf", **sizes)
    out = root / "mlx"
    done = _python("-m", "restore_mlx.convert", "--hf-path", str(hf),
                   "--mlx-path", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((out / "config.json").read_text())["quantization"]["bits"] == 4
    return out


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    """HF-layout tiny llava converted to 4-bit by the runner script: (model, image)."""
    root = tmp_path_factory.mktemp("cli")
    hf = write_checkpoint(
        "llava", root / "hf", hidden_size=64
    )  # 8x8 = 64 visual tokens
    out = root / "mlx"
    done = _python("convert/convert.py", "--hf-path", str(hf), "--mlx-path", str(out))
    assert done.returncode == 0, done.stderr
    return out, write_image(root / "picture.png", 32)


def test_end_to_end_subprocess_reports_reduced_tokens(llava, tmp_path):
    model, image = llava
    stats_file, overlay = tmp_path / "stats.json", tmp_path / "overlay.png"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(model), "--image", str(image),
        "--prompt", "what color is the square ?", "--max-tokens", "4",
        "--stats-json", str(stats_file), "--overlay", str(overlay),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Visual tokens: 64 -> 32" in done.stdout
    assert "preset mobile-50: divprune, keep 0.5, RESTORE: positions" in done.stdout
    stats = json.loads(stats_file.read_text())
    assert (stats["visual_tokens_before"], stats["visual_tokens_after"]) == (64, 32)
    assert stats["method"] == "divprune" and stats["keep"] == 0.5 and stats["restore"]
    assert stats["preset"] == "mobile-50"
    for key in ("prompt_tokens", "prefill_s", "ttft_s", "generation_tps"):
        assert stats[key] > 0
    assert stats["peak_memory_gb"] >= 0

    from PIL import Image

    assert Image.open(overlay).format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png", "stats.json"]


def test_several_images_each_reduced_with_one_overlay_each(llava, tmp_path, capsys):
    model, image = llava
    second = write_image(tmp_path / "second.png", 32)
    stats_file, overlay = tmp_path / "stats.json", tmp_path / "overlay.png"
    argv = [
        "--model", model, "--image", image, second, "--prompt", "which is red ?",
        "--max-tokens", 2, "--keep", 0.25, "--stats-json", stats_file,
        "--overlay", overlay,
    ]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "Visual tokens: 128 -> 32" in out
    assert "image 1: 64 -> 16" in out and "image 2: 64 -> 16" in out
    stats = json.loads(stats_file.read_text())
    assert stats["visual_tokens_per_image"] == [[64, 16], [64, 16]]
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["overlay-1.png", "overlay-2.png", "second.png", "stats.json"]


def test_bad_input_subprocess_one_line_no_traceback(llava, tmp_path):
    model, _ = llava
    stats_file = tmp_path / "stats.json"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(model), "--prompt", "hi",
        "--image", str(tmp_path / "missing.png"), "--stats-json", str(stats_file),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"restore-mlx-generate: error: image not found: {tmp_path / 'missing.png'}"
    ]
    assert not stats_file.exists()


def _run(argv, capsys):
    """main(argv) in process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def cli_stats(model, image, tmp_path, capsys, *flags, max_tokens=2) -> dict:
    """``--stats-json`` of one in-process generate run that must succeed."""
    stats_file = tmp_path / "s.json"
    argv = ["--model", model, "--image", image, "--prompt", "hi",
            "--max-tokens", max_tokens, "--stats-json", stats_file, *flags]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    return json.loads(stats_file.read_text())


def assert_presets_keep(model, image, visual, preset_tokens, tmp_path, capsys):
    """Every preset keeps exactly ``preset_tokens[preset]`` of the ``visual`` tokens,
    and the prompt shrinks by exactly what was removed."""
    full = cli_stats(model, image, tmp_path, capsys, "--keep", 1.0)
    assert full["visual_tokens_before"] == full["visual_tokens_after"] == visual
    for preset, kept in preset_tokens.items():
        stats = cli_stats(model, image, tmp_path, capsys, "--preset", preset)
        got = (stats["visual_tokens_before"], stats["visual_tokens_after"])
        assert got == (visual, kept), preset
        assert stats["prompt_tokens"] == full["prompt_tokens"] - (visual - kept)


def _bad_image(tmp_path):
    path = tmp_path / "corrupt.png"
    path.write_bytes(b"\x89PNG not really")
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--image", "{bad}"], "cannot read image"),
        (["--image", "{img}", "--preset", "nope"], "unknown preset 'nope'"),
        (["--image", "{img}", "--method", "nope"], "unknown method 'nope'"),
        (["--image", "{img}", "--preset", "mobile-25", "--keep", "0.3"], "--preset"),
        (["--image", "{img}", "--keep", "0.3", "--tokens", "8"], "--keep and --tokens"),
        (["--image", "{img}", "--keep", "1.5"], "--keep must be in"),
        (["--image", "{img}", "--tokens", "1000"], "tokens must be in"),
        (["--image", "{img}", "--overlay", "{tmp}/no/o.png"], "--overlay"),
        (["--overlay", "{tmp}/o.png"], "--overlay needs every --image"),
        (["--image", "{img}", "--keep"], "expected one argument"),
    ],
)
def test_bad_inputs_exit_2_one_line_nothing_written(
    llava, tmp_path, capsys, extra, message
):
    model, image = llava
    subs = {"{bad}": str(_bad_image(tmp_path)), "{img}": str(image)}
    extra = [subs.get(a, a.replace("{tmp}", str(tmp_path))) for a in extra]
    stats_file = tmp_path / "stats.json"
    argv = ["--model", model, "--prompt", "hi", "--stats-json", stats_file, *extra]
    code, _, err = _run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err
    assert not stats_file.exists() and not (tmp_path / "o.png").exists()


# Flag values that cannot work: refused before the model's config is even read.
EARLY_GAPS = [
    (["--image", "{img}", "--overlay", "{tmp}/o.txt"], "must end in .png"),
    (["--image", "{img}", "--max-tokens", "0"], "--max-tokens must be at least 1"),
    (["--image", "{img}", "--max-tokens", "-1"], "--max-tokens must be at least 1"),
    (["--image", "{img}", "--prompt", ""], "--prompt must not be empty"),
    (["--image", "{img}", "--prompt", " \t "], "--prompt must not be empty"),
    (["--image", "{img}", "--resize-shape", "1", "2", "3"], "--resize-shape"),
    (["--image", "{img}", "--processor-kwargs", "{"], "--processor-kwargs"),
    (["--image", "{img}", "--processor-kwargs", "[1]"], "a JSON object"),
    (["--image", "{img}", "--kv-bits", "7"], "--kv-bits 7 is not supported"),
    (
        ["--image", "{img}", "--kv-bits", "4", "--kv-group-size", "16"],
        "--kv-group-size 16",
    ),
    (["--image", "{img}", "--max-kv-size", "8", "--max-tokens", "8"], "--max-kv-size"),
    (["--image", "{img}", "--prefill-step-size", "0"], "--prefill-step-size"),
]


@pytest.mark.parametrize("extra, message", EARLY_GAPS)
def test_input_gaps_fail_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    def no_work(*args, **kwargs):
        raise AssertionError("the model was looked at before the flags were checked")

    monkeypatch.setattr("restore_mlx.convert.read_model_config", no_work)
    monkeypatch.setattr("restore_mlx.adapters.processors.load", no_work)
    image = write_image(tmp_path / "p.png", 32)
    extra = [str(image) if a == "{img}" else a.replace("{tmp}", str(tmp_path))
             for a in extra]  # fmt: skip
    stats_file = tmp_path / "stats.json"
    argv = ["--model", tmp_path / "m", "--prompt", "hi", "--stats-json", stats_file,
            *extra]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]


def test_unsupported_architecture(tmp_path, capsys):
    folder = tmp_path / "idefics"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "paligemma"}))
    code, _, err = _run(["--model", folder, "--prompt", "hi"], capsys)
    assert code == 2 and "'paligemma' is not supported" in err


def test_prompt_without_image_runs_unreduced(llava, tmp_path, capsys):
    model, _ = llava
    stats_file = tmp_path / "s.json"
    argv = ["--model", model, "--prompt", "hi", "--max-tokens", 2, "--stats-json",
            stats_file]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 0 and "unreduced" in err
    stats = json.loads(stats_file.read_text())
    assert stats["visual_tokens_before"] == stats["visual_tokens_after"] == 0
    assert stats["restore"] is False and stats["method"] is None


def test_method_budget_and_no_restore(llava, tmp_path, capsys):
    model, image = llava
    stats_file = tmp_path / "s.json"
    argv = ["--model", model, "--image", image, "--prompt", "hi", "--max-tokens", 1,
            "--method", "pool", "--tokens", 16, "--no-restore", "--stats-json",
            stats_file]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    stats = json.loads(stats_file.read_text())
    assert stats["visual_tokens_after"] == 16 and stats["tokens"] == 16
    assert stats["method"] == "pool" and stats["restore"] is False
    assert stats["preset"] is None and "RESTORE off" in out


def test_default_preset_comes_from_conversion_qwen(tmp_path, capsys):
    from restore_mlx.convert import convert

    hf = write_checkpoint("qwen2_vl", tmp_path / "hf", image_size=112)
    model = convert(str(hf), str(tmp_path / "mlx"), quantize=False, preset="server-70")
    image = write_image(tmp_path / "p.png", 112)
    stats = cli_stats(model, image, tmp_path, capsys, max_tokens=1)
    assert stats["preset"] == "server-70" and stats["keep"] == 0.3
    assert stats["visual_tokens_before"] == 64 > stats["visual_tokens_after"]


def test_library_generate_reduces_only_when_applied(llava):
    from mlx_vlm.prompt_utils import apply_chat_template

    import restore_mlx
    from restore_mlx.adapters.processors import load

    path, image = llava
    model, processor = load(path)
    prompt = apply_chat_template(processor, model.config, "hi", num_images=1)
    plain = restore_mlx.generate(model, processor, prompt, [str(image)], max_tokens=2)
    restore_mlx.apply(model, "mobile-50")
    reduced = restore_mlx.generate(model, processor, prompt, str(image), max_tokens=2)
    assert plain.prompt_tokens - reduced.prompt_tokens == 32
    chunks = list(
        restore_mlx.stream_generate(model, processor, prompt, str(image), max_tokens=2)
    )
    assert chunks[-1].prompt_tokens == reduced.prompt_tokens
    restore_mlx.remove(model)
    again = restore_mlx.generate(model, processor, prompt, str(image), max_tokens=2)
    assert again.prompt_tokens == plain.prompt_tokens


def _spy(monkeypatch, target):
    """Wrap ``module.name`` so that each call's keyword arguments are recorded."""
    import importlib

    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real, calls = getattr(module, name), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_mlx_vlm_flags_reach_loading_processing_and_generation(
    llava, tmp_path, capsys, monkeypatch
):
    model, image = llava
    loads = _spy(monkeypatch, "restore_mlx.generate.load")
    processed = _spy(monkeypatch, "mlx_vlm.utils.prepare_inputs")
    generated = _spy(monkeypatch, "mlx_vlm.stream_generate")
    argv = [
        "--model", model, "--image", image, "--prompt", "hi", "--max-tokens", 3,
        "--revision", "main", "--temperature", 0.7, "--top-p", 0.9, "--top-k", 5,
        "--min-p", 0.05, "--repetition-penalty", 1.1, "--repetition-context-size", 7,
        "--presence-penalty", 0.2, "--presence-context-size", 6,
        "--frequency-penalty", 0.3, "--frequency-context-size", 5, "--seed", 3,
        "--prefill-step-size", 16, "--max-kv-size", 4096, "--quantized-kv-start",
        9999, "--kv-bits", 8, "--kv-group-size", 32, "--skip-special-tokens",
        "--eos-tokens", "\\u2581end", "--resize-shape", 40,
        "--processor-kwargs", '{"do_rescale": true}',
    ]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert loads[0] == {
        "adapter_path": None, "revision": "main", "trust_remote_code": False
    }  # fmt: skip
    assert processed[0]["resize_shape"] == (40, 40)
    assert processed[0]["do_rescale"] is True
    expected = dict(
        max_tokens=3, temperature=0.7, top_p=0.9, top_k=5, min_p=0.05,
        repetition_penalty=1.1, repetition_context_size=7, presence_penalty=0.2,
        presence_context_size=6, frequency_penalty=0.3, frequency_context_size=5,
        seed=3, prefill_step_size=16, max_kv_size=4096, quantized_kv_start=9999,
        kv_bits=8.0, kv_group_size=32, kv_quant_scheme="uniform",
        skip_special_tokens=True,
    )  # fmt: skip
    (kwargs,) = generated
    assert {k: kwargs.get(k) for k in expected} == expected
    # Consumed before mlx-vlm's stream_generate, which does not know them.
    assert not {"eos_tokens", "resize_shape", "processor_kwargs"} & set(kwargs)
    assert "input_ids" in kwargs  # the reduced prompt
    assert "Visual tokens: 64 -> 32" in out


def test_rotating_cache_too_small_for_the_reduced_prompt(llava, tmp_path, capsys):
    model, image = llava
    stats_file = tmp_path / "s.json"
    base = ["--model", model, "--image", image, "--prompt", "hi", "--max-tokens", 4,
            "--stats-json", stats_file]  # fmt: skip
    code, _, err = _run([*base, "--max-kv-size", 20], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "would wrap" in err and "max_kv_size to at least" in err
    assert not stats_file.exists()

    code, _, err = _run([*base, "--max-kv-size", 512], capsys)
    assert code == 0, err
    assert json.loads(stats_file.read_text())["visual_tokens_after"] == 32


def test_verbose_shows_the_prompt(llava, capsys):
    model, image = llava
    argv = ["--model", model, "--image", image, "--prompt", "hi", "--max-tokens", 1,
            "--verbose"]  # fmt: skip
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "Prompt:" in out and "hi" in out and "Visual tokens" in out


def test_help_names_the_command_and_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: restore-mlx-generate")
    from mlx_vlm.generate.common import DEFAULT_MAX_TOKENS, DEFAULT_PREFILL_STEP_SIZE

    assert f"(default: {DEFAULT_MAX_TOKENS})" in out
    assert f"(default: {DEFAULT_PREFILL_STEP_SIZE})" in out
    for flag in ("--top-p", "--kv-bits", "--adapter-path", "--verbose, --no-verbose"):
        assert flag in out


# arch -> picture side: 16 visual tokens each (Qwen3-VL / 3.5 and their MoE: 128 px at
# 16 px patches; Qwen2.5-VL: 56 px at 7 px patches), merged 2 x 2.
QWEN_PICTURES = {
    "qwen2_5_vl": 56, "qwen3_vl": 128, "qwen3_5": 128, "qwen3_vl_moe": 128,
    "qwen3_5_moe": 128,
}  # fmt: skip


def _quantized_experts(model_dir):
    """Names of the 4-bit SwitchLinear expert projections in a converted model."""
    import mlx.core as mx

    names = [n for f in model_dir.glob("*.safetensors") for n in mx.load(str(f))]
    return sorted(n for n in names if ".switch_mlp." in n and n.endswith(".scales"))


@pytest.mark.parametrize("arch", sorted(QWEN_PICTURES))
def test_qwen_end_to_end_subprocess(arch, tmp_path, capsys):
    # HF layout -> 4-bit conversion with a preset -> the CLI with a real image file.
    hf = write_checkpoint(arch, tmp_path / "hf", hidden_size=64)
    model = tmp_path / "mlx"
    done = _python("-m", "restore_mlx.convert", "--hf-path", str(hf),
                   "--mlx-path", str(model), "--preset", "server-70")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((model / "config.json").read_text())["quantization"]["bits"] == 4
    if arch.endswith("_moe"):  # hidden 64, experts 64 wide: every expert matmul too
        layers = json.loads((hf / "config.json").read_text())["text_config"]
        assert len(_quantized_experts(model)) == 3 * layers["num_hidden_layers"]
    image = write_image(tmp_path / "picture.png", QWEN_PICTURES[arch])
    stats_file = tmp_path / "stats.json"
    done = _python(
        "-m", "restore_mlx.generate", "--model", str(model), "--image", str(image),
        "--prompt", "what color is the square ?", "--max-tokens", "3",
        "--stats-json", str(stats_file), "--overlay", str(tmp_path / "o.png"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Visual tokens: 16 -> 5" in done.stdout  # server-70: round(0.3 * 16)
    stats = json.loads(stats_file.read_text())
    assert stats["preset"] == "server-70" and stats["restore"]
    argv = ["--model", model, "--image", image, "--prompt", "hi", "--max-tokens", 1,
            "--preset", "mobile-50", "--stats-json", stats_file]  # fmt: skip
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    stats = json.loads(stats_file.read_text())
    assert (stats["visual_tokens_before"], stats["visual_tokens_after"]) == (16, 8)
