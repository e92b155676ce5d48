import ast
from pathlib import Path

import pytest
from torch import nn

from instaseg.errors import ConfigError
from instaseg.models import registry

MODELS_DIR = Path(registry.__file__).parent


def test_register_get_and_duplicate_raises(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {})
    monkeypatch.setattr(registry, "_TASKS", {})

    @registry.register_model()
    def tiny(*, num_classes: int = 2) -> nn.Module:
        return nn.Linear(1, num_classes)

    assert registry.list_models() == ["tiny"]
    assert registry.get_model("tiny", num_classes=5).out_features == 5
    with pytest.raises(ValueError, match="already registered"):
        registry.register_model("tiny")(tiny)
    with pytest.raises(ConfigError, match="unknown model 'nope'.*tiny"):
        registry.get_model("nope")


def test_models_declare_their_task(monkeypatch):
    monkeypatch.setattr(registry, "_MODELS", {})
    monkeypatch.setattr(registry, "_TASKS", {})

    @registry.register_model("pan", task="panoptic")
    def pan() -> nn.Module:
        return nn.Identity()

    @registry.register_model("inst")
    def inst() -> nn.Module:
        return nn.Identity()

    assert registry.model_task("pan") == "panoptic" and registry.model_task("inst") == "instance"
    assert registry.list_models("panoptic") == ["pan"] and registry.list_models() == ["inst", "pan"]
    with pytest.raises(ValueError, match="unknown task 'cars'"):
        registry.register_model("x", task="cars")


def _imports(path: Path) -> set[str]:
    """instaseg.models.* modules that ``path`` imports (at any level of the file)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("instaseg.models"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("instaseg.models"))
    return {m for m in found if (MODELS_DIR / f"{m.rsplit('.', 1)[-1]}.py").exists()
            and m.count(".") == 2}


def test_model_modules_import_without_cycles():
    # the registry imports no model code; the package __init__ imports the model modules
    graph = {f"instaseg.models.{p.stem}": _imports(p) for p in MODELS_DIR.glob("*.py")
             if p.stem != "__init__"}
    assert not graph["instaseg.models.registry"]
    assert "instaseg.models.registry" in graph["instaseg.models.yolact"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dep in graph.get(module, ()):
            visit(dep, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())
