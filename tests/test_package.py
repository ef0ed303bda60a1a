"""Package-wide guarantees that no single module's tests would catch."""

import pathlib
import re
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "restore_mlx"


def _sources(folder=PACKAGE):
    return sorted(folder.rglob("*.py"))


def test_no_float64_in_package():
    # Metal has no float64: an mx.float64 array on the GPU raises.
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _sources()
        if re.search(r"float64|np\.double\b", p.read_text())
    ]
    assert offenders == []


def test_core_never_imports_mlx_vlm():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _sources(PACKAGE / "core")
        if re.search(r"^\s*(from|import)\s+mlx_vlm", p.read_text(), re.M)
    ]
    assert offenders == []


def test_library_never_pins_a_device():
    # The same code must run on Metal (macOS default) and the CPU (Linux).
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in _sources()
        if "set_default_device" in p.read_text()
    ]
    assert offenders == []


def test_import_is_light_and_exports_the_api():
    code = (
        "import sys, restore_mlx as r;"
        "assert 'mlx_vlm' not in sys.modules, 'import restore_mlx pulled in mlx_vlm';"
        "assert callable(r.reduce) and callable(r.generate) and callable(r.stream_generate);"
        "assert callable(r.apply) and callable(r.remove);"
        "assert 'divprune' in r.REDUCERS and 'mobile-50' in r.PRESETS"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_generate_attribute_stays_the_function_after_cli_import():
    # The CLI module shares the name `generate` with the library function.
    code = (
        "import restore_mlx, restore_mlx.generate;"
        "from restore_mlx.generate import main;"
        "import types; assert not isinstance(restore_mlx.generate, types.ModuleType)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
