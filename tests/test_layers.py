"""The house rules of the imports: each layer imports only those below it, and nothing cycles.

Layers by folder, bottom to top: the data core (``datafactory/``: its base files, then
``datasets/``, ``simulation/``, ``micrographs/``) ← the style models (``translators/``: the parametric model's physics terms in
``physics/``, then the rest) ← the
downstream models (``inference/``) ← the application (``factory_app/``: ``workflows/``, then
``cli/``). Imports inside functions count as much as those at the top of a file: a deferred
import still ties the two modules together.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("datafactory", "translators", "inference", "factory_app")
#: Folder -> layer; the longest matching prefix wins.
LAYERS = {
    "datafactory": 0,
    "datafactory.datasets": 1,
    "datafactory.simulation": 2,
    "datafactory.micrographs": 3,
    "translators.physics": 9,
    "translators": 10,
    "inference": 20,
    "factory_app": 30,
    "factory_app.workflows": 30,
    "factory_app.cli": 40,
}


def layer_of(module: str) -> int | None:
    best = None
    for prefix, layer in LAYERS.items():
        if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, layer)
    return None if best is None else best[1]


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module ``name`` lives in (the longest existing prefix), or None."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in modules:
            return ".".join(parts)
        parts.pop()
    return None


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """{module: {imported project module: line of the first such import}}."""
    graph: dict[str, dict[str, int]] = defaultdict(dict)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = module.split(".")
                    if path.name != "__init__.py":
                        base.pop()
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module
                # ``from PKG import sub`` ties to the submodule when ``sub`` is one, else to PKG
                names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules else source for alias in node.names]
            else:
                continue
            for name in names:
                target = _resolve(name, modules)
                if target is not None and target != module:
                    graph[module].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_has_a_layer():
    modules = project_modules()
    assert len(modules) > 50
    assert all(layer_of(m) is not None for m in modules)


def test_no_module_imports_a_layer_above_its_own():
    modules = project_modules()
    graph = import_graph(modules)
    upward = [
        f"{modules[m].relative_to(ROOT)}:{line} imports {target}"
        for m, targets in sorted(graph.items())
        for target, line in sorted(targets.items())
        if layer_of(target) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_cycles():
    found = cycles(import_graph(project_modules()))
    assert not found, "\n".join(" <-> ".join(c) for c in found)


def test_the_checks_see_an_upward_import_and_a_cycle(tmp_path):
    """The two checks above on a made-up graph: they can fail."""
    graph = {"datafactory.a": {"translators.b": 3}, "translators.b": {"datafactory.a": 1}, "inference.c": {"datafactory.a": 2}}
    assert cycles(graph) == [["datafactory.a", "translators.b"]]
    assert [m for m, ts in graph.items() for t in ts if layer_of(t) > layer_of(m)] == ["datafactory.a"]
    assert layer_of("factory_app.cli.style") > layer_of("factory_app.workflows.generate") > layer_of("inference.data")
    assert layer_of("translators.parametric") > layer_of("datafactory.micrographs.io") > layer_of("datafactory.simulation.samples")
    assert layer_of("datafactory.simulation.samples") > layer_of("datafactory.datasets.shards") > layer_of("datafactory.outputs")


def test_the_application_is_not_inside_a_library():
    """The command line and the workflows live in ``factory_app/`` only (their old home was ``datafactory/``)."""
    for package in ("datafactory", "translators", "inference"):
        assert not (ROOT / package / "cli").exists() and not (ROOT / package / "workflows").exists()


def test_old_import_paths_still_work_and_warn():
    import importlib
    import sys
    import warnings

    for name in ("datafactory.shards", "datafactory.cli", "datafactory.cli.main"):
        sys.modules.pop(name, None)  # only the aliases: the modules stay under their new names
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("datafactory.shards")
        cli = importlib.import_module("datafactory.cli.main")
    assert old is importlib.import_module("datafactory.datasets.shards")
    assert cli is importlib.import_module("factory_app.cli.main")
    assert sum(issubclass(w.category, DeprecationWarning) and "moved to" in str(w.message) for w in caught) >= 2
