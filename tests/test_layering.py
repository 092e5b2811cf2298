"""The package's import layers: no import cycles among ``sashimi`` modules (imports inside functions
count), each module imports only from its own layer or the layers below, and no model family imports
another. See ``docs/architecture.md``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sashimi"

#: module prefix -> layer (the longest matching prefix wins); docs/architecture.md shows the same table
LAYERS = {
    "sashimi._paths": 0, "sashimi._validate": 0, "sashimi.kernels": 0, "sashimi.audio": 0, "sashimi.data": 0,
    "sashimi.hub.format": 0, "sashimi.hub.download": 0, "sashimi.hub.cards": 0,
    "sashimi.layers": 1,
    "sashimi.generation.sampling": 2, "sashimi.generation.step_program": 2,
    "sashimi.models.config": 3, "sashimi.models.sashimi": 3,
    "sashimi.schedulers": 4, "sashimi.losses": 4, "sashimi.metrics": 4, "sashimi.generation": 4,
    "sashimi.optim": 4, "sashimi.testing": 4,
    "sashimi.convert": 5, "sashimi.hub.registry": 5,
    "sashimi.models": 6,
    "sashimi.models.__init__": 7, "sashimi.hub.__init__": 7, "sashimi.hub.publish": 7,
    "sashimi.training": 8, "sashimi.train": 8,
    "sashimi.cli": 9, "sashimi.__main__": 9, "sashimi.__init__": 9,
}
#: modules of sashimi.models that are shared infrastructure, not a family
SHARED_MODEL_MODULES = {"sashimi.models.base", "sashimi.models.config", "sashimi.models.sashimi",
                        "sashimi.models.tokens", "sashimi.models.__init__"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(rel.parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """A dotted name -> the module it is (``pkg`` -> ``pkg.__init__``), or None outside the package."""
    if not name.startswith("sashimi"):
        return None
    if name in MODULES:
        return name
    if name + ".__init__" in MODULES:
        return name + ".__init__"
    return None


def _is_type_checking(node: ast.If) -> bool:
    return (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING") or (
        isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> set[str]:
    """Project modules imported anywhere in the file (functions included; ``if TYPE_CHECKING`` excluded)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module.rsplit(".", 1)[0] if not module.endswith("__init__") else module.rsplit(".", 1)[0]
    found: set[str] = set()
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for n in ast.walk(node))
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _resolve(alias.name)
                if target:
                    found.add(target)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                target = _resolve(f"{base}.{alias.name}") or _resolve(base)
                if target:
                    found.add(target)
    found.discard(module)
    return found


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _layer(module: str) -> int:
    name = module
    while True:
        if name in LAYERS:
            return LAYERS[name]
        if "." not in name:
            raise KeyError(module)
        name = name.rsplit(".", 1)[0]


def _family(module: str) -> str | None:
    if not module.startswith("sashimi.models.") or module in SHARED_MODEL_MODULES:
        return None
    parts = module.split(".")
    if parts[2] == "baselines":
        return None if parts[-1] == "__init__" else ".".join(parts[:4])
    return ".".join(parts[:3])


def test_every_module_has_a_layer():
    missing = []
    for m in MODULES:
        try:
            _layer(m)
        except KeyError:
            missing.append(m)
    assert not missing, f"modules without a layer in LAYERS: {missing}"


def test_no_import_cycles():
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down_the_layers():
    bad = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in GRAPH.items() for t in targets if _layer(t) > _layer(m)
    ]
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def test_no_family_imports_another():
    bad = [
        f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
        if _family(m) and _family(t) and _family(m) != _family(t)
    ]
    assert not bad, "\n".join(sorted(bad))


def test_generation_and_hub_import_no_model_class():
    """Generation loops see a model through its step-state protocol; the hub knows no model class."""
    bad = [
        f"{m} imports {t}" for m, targets in GRAPH.items() for t in targets
        if (m.startswith("sashimi.generation") or m.startswith("sashimi.hub.")) and m != "sashimi.hub.publish"
        and (_family(t) or t in ("sashimi.models.sashimi", "sashimi.models.base"))
    ]
    assert not bad, "\n".join(sorted(bad))


def test_the_check_sees_a_cycle_and_a_wrong_direction():
    """The checker itself: a synthetic cycle and an upward import are reported."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {**saved, "sashimi.layers.s4block": saved["sashimi.layers.s4block"] | {"sashimi.models.sashimi"}}
        with pytest.raises(AssertionError, match="cycles"):
            test_no_import_cycles()
        with pytest.raises(AssertionError, match="against the layers"):
            test_imports_point_down_the_layers()
    finally:
        GRAPH = saved
