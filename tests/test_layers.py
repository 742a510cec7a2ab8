"""The worker core's import rules: each module imports only its own layer or lower ones (as
``veriframe_addon.worker.LAYERS`` states them), and no imports run in a cycle.

Read from the source with ``ast``, so imports inside functions and under ``TYPE_CHECKING`` count too:
a cycle that only type hints close is still a knot a newcomer has to untie.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from devnet.process import ROOT
from veriframe_addon.worker import LAYERS

WORKER = ROOT / "veriframe_addon" / "worker"
PACKAGE = "veriframe_addon.worker"


def worker_modules(root: Path) -> dict[str, Path]:
    """Every module below ``root`` by its name in the worker package, e.g. ``ipfs.cid``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            modules[".".join(parts)] = path
    return modules


def layer_of(module: str) -> int | None:
    """The layer of the most specific ``LAYERS`` entry naming ``module`` or a package above it."""
    fits = [
        (len(entry), index)
        for index, entries in enumerate(LAYERS)
        for entry in entries
        if module == entry or module.startswith(entry + ".")
    ]
    return max(fits)[1] if fits else None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """Absolute names of what ``module`` imports; ``from . import telemetry`` names the module."""
    here = f"{PACKAGE}.{module}".split(".")
    base = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = ".".join(base[: len(base) - node.level + 1])
                target = f"{parent}.{node.module}" if node.module else parent
            else:
                target = node.module or ""
            found.add(target)
            for alias in node.names:
                if f"{target}.{alias.name}".removeprefix(f"{PACKAGE}.") in known:
                    found.add(f"{target}.{alias.name}")
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Worker module -> the worker modules it imports, plus any other part of the add-on by full name."""
    modules = worker_modules(root)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for target in imports_of(module, path, set(modules)):
            if target.startswith(PACKAGE + "."):
                name = target.removeprefix(PACKAGE + ".")
                while name not in modules and "." in name:  # ``from .ipfs.cid import X``: the module
                    name = name.rsplit(".", 1)[0]
                edges.add(name)
            elif target == "veriframe_addon" or target.startswith("veriframe_addon."):
                edges.add(target)
        graph[module] = edges - {module}
    return graph


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in graph.items():
        for target in targets:
            if target == "veriframe_addon":
                continue  # the package root: bl_info, and no bpy at import
            if target.startswith("veriframe_addon."):
                wrong.append(f"{module} imports {target}, outside the worker core")
                continue
            mine, theirs = layer_of(module), layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{module} (layer {mine}) imports {target} (layer {theirs})")
    return sorted(wrong)


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(t for t in graph.get(module, ()) if t in graph):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_every_module_has_a_layer() -> None:
    unplaced = [module for module in worker_modules(WORKER) if layer_of(module) is None]
    assert not unplaced, f"add these to veriframe_addon.worker.LAYERS: {unplaced}"


def test_no_module_imports_a_higher_layer() -> None:
    wrong = upward_imports(import_graph(WORKER))
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles() -> None:
    cycles = import_cycles(import_graph(WORKER))
    assert not cycles, "\n".join(cycles)


@pytest.mark.parametrize(
    ("files", "check", "expected"),
    [
        (
            {"a.py": "from .b import X\n", "b.py": "if T:\n    from . import a\n"},
            import_cycles,
            "a -> b -> a",
        ),
        ({"scene/x.py": "from ..loop import Worker\n", "loop.py": ""}, upward_imports, "scene.x (layer 4)"),
        ({"ipfs/cid.py": "from ...panel import X\n"}, upward_imports, "veriframe_addon.panel, outside"),
    ],
)
def test_the_rules_catch_planted_breaks(tmp_path: Path, files: dict[str, str], check, expected: str) -> None:
    """A cycle through a lazy import, a stage importing the loop, a core module importing the UI."""
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    found = check(import_graph(tmp_path))
    assert any(expected in line for line in found), found
