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


def _internal_imports(path):
    """(module-level, function-level) restore_mlx modules that ``path`` imports."""
    import ast

    tree = ast.parse(path.read_text())
    package = path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1]
    top, nested = set(), set()

    def targets(node):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ((node.module,) if node.module else ()))
            else:
                name = node.module or ""
            # "from x import y": y may be a submodule of x or a name in it.
            names = [f"{name}.{a.name}" for a in node.names]
            return names if name.startswith("restore_mlx") else []
        if isinstance(node, ast.Import):
            return [a.name for a in node.names if a.name.startswith("restore_mlx")]
        return []

    for node in tree.body:
        top.update(targets(node))
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                nested.update(targets(node))
    return top, nested


def test_no_function_level_imports_of_the_package():
    # Hidden cycles live there; only heavy optional third-party imports may be lazy.
    offenders = {
        str(p.relative_to(PACKAGE)): sorted(nested)
        for p in _sources()
        if (nested := _internal_imports(p)[1])
    }
    assert offenders == {}


def test_no_import_cycles_between_modules():
    graph = {}
    for p in _sources():
        rel = p.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        graph[name] = _internal_imports(p)[0]

    def resolve(target):
        # "from x import y" names module x.y, or an attribute of module x.
        return target if target in graph else target.rsplit(".", 1)[0]

    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(resolve(t) for t in graph.get(node, ())):
            # A package's __init__ is imported by its submodules: not a cycle.
            if dep == node or node.startswith(dep + "."):
                continue
            if state.get(dep) == "open":
                raise AssertionError(" -> ".join(path + [dep]))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_entry_points_run_as_modules():
    for module in ("restore_mlx.bench", "restore_mlx.eval", "restore_mlx.convert"):
        run = subprocess.run(
            [sys.executable, "-m", module, "--help"], capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        assert run.stdout.startswith("usage: "), module


def test_load_is_public():
    import restore_mlx
    from restore_mlx.adapters.processors import load

    assert restore_mlx.load is load
