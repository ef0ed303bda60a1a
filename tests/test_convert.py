"""restore_mlx.convert: 4-bit by default, preset recorded, nothing half-written."""

import json
import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from restore_mlx.bench.checkpoints import write_checkpoint  # noqa: E402
from restore_mlx.convert import PRESET_KEY, convert, main  # noqa: E402
from restore_mlx.errors import InputError  # noqa: E402


@pytest.fixture(scope="module")
def hf(tmp_path_factory):
    # hidden 64: LM linear layers are multiples of the group size, so they quantize
    root = tmp_path_factory.mktemp("hf")
    return write_checkpoint("llava", root / "llava", hidden_size=64)


def _siblings(folder):
    return sorted(p.name for p in folder.iterdir())


def test_converts_quantized_with_preset(hf, tmp_path):
    out = convert(str(hf), str(tmp_path / "m"), preset="server-70")
    config = json.loads((out / "config.json").read_text())
    assert config[PRESET_KEY] == "server-70"
    assert config["quantization"]["bits"] == 4
    assert _siblings(tmp_path) == ["m"]  # no temporary folder left

    from restore_mlx.adapters.processors import load

    model, _ = load(out)
    assert hasattr(model.language_model.model.layers[0].self_attn.q_proj, "scales")


def test_refuses_existing_folder_and_force_replaces(hf, tmp_path, capsys):
    out = tmp_path / "m"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["--hf-path", str(hf), "--mlx-path", str(out), "--no-quantize"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "already exists" in err and len(err.strip().splitlines()) == 1
    assert (out / "old.txt").exists()
    main(["--hf-path", str(hf), "--mlx-path", str(out), "--no-quantize", "--force"])
    assert not (out / "old.txt").exists()
    config = json.loads((out / "config.json").read_text())
    assert "quantization" not in config and config[PRESET_KEY] == "mobile-50"
    assert _siblings(tmp_path) == ["m"]


def test_unsupported_architecture_leaves_nothing(hf, tmp_path):
    other = tmp_path / "idefics"
    shutil.copytree(hf, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(
        json.dumps({**config, "model_type": "paligemma"})
    )
    with pytest.raises(InputError, match="'paligemma' is not supported"):
        convert(str(other), str(tmp_path / "m"))
    assert _siblings(tmp_path) == ["idefics"]


def test_failed_conversion_keeps_old_output(hf, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(hf, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    out = tmp_path / "m"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    with pytest.raises(Exception):
        convert(str(broken), str(out), force=True)
    assert _siblings(out) == ["old.txt"]
    assert _siblings(tmp_path) == ["broken", "m"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"preset": "nope"}, "unknown preset"),
        ({"dtype": "int8"}, "unknown dtype"),
        ({"q_bits": 7}, "7 bits is not supported"),
        ({"q_group_size": 7}, "group size 7 is not supported"),
    ],
)
def test_bad_options_rejected_before_work(hf, tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        convert(str(hf), str(tmp_path / "m"), **kwargs)
    assert not (tmp_path / "m").exists()


def test_missing_source(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        convert(str(tmp_path / "nowhere"), str(tmp_path / "m"))


def test_hub_id_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # empty cache
    with pytest.raises(InputError, match="cannot fetch config.json of 'org/model'"):
        convert("org/model", str(tmp_path / "m"))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("flag", ["--q-bits", "--q-group-size"])
def test_cli_rejects_quantization_mlx_cannot_do_before_work(tmp_path, capsys, flag):
    # The source does not exist: reading it would be a different error.
    argv = ["--hf-path", str(tmp_path / "nowhere"), "--mlx-path", str(tmp_path / "m")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, flag, "7"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"argument {flag}: invalid choice: 7" in err
    assert list(tmp_path.iterdir()) == []


def test_unquantized_conversion_ignores_quantization_settings(hf, tmp_path):
    out = convert(str(hf), str(tmp_path / "m"), quantize=False, q_bits=7)
    assert "quantization" not in json.loads((out / "config.json").read_text())
