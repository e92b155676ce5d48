"""The package's layering: imports point one way, and no module import cycles, not even through
imports inside functions (they are checked exactly like top-level ones).

Layers, lowest first (a module may import its own part of the package and any lower layer; within a
layer only the pairs in ``SIDEWAYS``):

0. ``errors``, ``fileio``: the error types and atomic file writes
1. ``structures``, ``ops``: plain data and pure functions on it (they use each other)
2. ``viz``: drawing
3. ``data``, ``models``, ``config``
4. ``evaluation``
5. ``engine``: training (validation is handed to it, so it never imports ``predict``)
6. ``predict``: the one inference path, and the commands that train and evaluate through it
7. ``serve``, ``export``, and the package face ``instaseg/__init__.py``
8. ``cli``
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "instaseg"
LAYERS = {
    "errors": 0, "fileio": 0,
    "structures": 1, "ops": 1,
    "viz": 2,
    "data": 3, "models": 3, "config": 3,
    "evaluation": 4,
    "engine": 5,
    "predict": 6,
    "serve": 7, "export": 7, "__init__": 7,
    "cli": 8, "__main__": 8,
}
SIDEWAYS = {("structures", "ops"), ("ops", "structures")}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out.append((".".join(parts), path))
    return out


def _part(module: str) -> str:
    """The top-level part of ``instaseg.X.Y`` (``X``), or ``__init__`` for the package itself."""
    parts = module.split(".")
    return parts[1].removesuffix(".py") if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported instaseg module, inside a function) for every import of the package."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names if a.name.startswith("instaseg")]
                found.extend((child.lineno, name, nested) for name in names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module.startswith("instaseg"):
                    found.append((child.lineno, child.module, nested))
            visit(child, nested)

    visit(tree, False)
    return found


def test_every_layer_is_known() -> None:
    unknown = {_part(m) for m, _ in _modules()} - set(LAYERS)
    assert not unknown, f"add these parts of instaseg to LAYERS: {sorted(unknown)}"


def test_imports_point_down() -> None:
    # Imports inside functions (kept where they spare `instaseg --help` a torch import) count the same.
    problems = []
    for module, path in _modules():
        here = _part(module)
        for line, target, _ in _imports(path):
            there = _part(target)
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            sideways = LAYERS.get(there) == LAYERS[here] and (here, there) in SIDEWAYS
            if there != here and there in LAYERS and LAYERS[there] >= LAYERS[here] and not sideways:
                problems.append(f"{where}: {here} (layer {LAYERS[here]}) -> {there} (layer {LAYERS[there]})")
    assert not problems, "\n".join(problems)


def test_no_module_import_cycles() -> None:
    modules = dict(_modules())
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for _, target, _ in _imports(path):
            while target not in modules and "." in target:  # "from pkg.mod import name" -> pkg.mod
                target = target.rsplit(".", 1)[0]
            if target != module and not module.startswith(target + "."):  # a package's own face
                targets.add(target)
        graph[module] = targets
    cycles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*stack[stack.index(nxt):], nxt]))
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    assert not cycles, "\n".join(cycles)
