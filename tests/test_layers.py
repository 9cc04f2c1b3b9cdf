"""The package's import graph: no cycles, and each layer imports only the layers below it.

Scanned from the source with ``ast`` (nothing is imported), counting imports inside functions
too: a lazy import that closes a cycle is still a cycle, it only fails later. The layers and
what each may import are documented in docs/architecture.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# bottom to top; a module may import its own layer and any layer with a smaller number
LAYERS = {
    "radfm": 0,  # the package root: version and lazy attribute lookups only
    "radfm.utils": 0,
    "radfm.transforms": 1,
    "radfm.model": 2,
    "radfm.answering": 3,  # the request path: every door (HTTP, CLI, MLflow, evaluate, node) calls it
    "radfm.dicom": 4,  # SR, series rules, UIDs, transfer syntaxes: shared by the doors that speak DICOM
    "radfm.data": 5,
    "radfm.metrics": 6,
    "radfm.engines": 7,  # Ignite engines only
    "radfm.doors": 8,  # generate, evaluate, the MLflow model, classify
    "radfm.http": 8,  # radfm serve: the app, the OpenAI routes, the chat page, the edge guard
    "radfm.rating": 8,
    "radfm.node": 8,  # the DICOM node
    "radfm.deploy": 8,  # the MONAI Deploy app
    "radfm.batch": 8,  # radfm batch (Ray Data): a door; reuses the node's rules and pull client, the SR
    "radfm.cli": 9,
    "radfm.demo": 9,
}


def _module_files() -> dict[str, Path]:
    """Dotted module name -> file, for ``radfm/`` and ``transforms/`` (installed as ``radfm.transforms``)."""
    modules: dict[str, Path] = {}
    for folder, prefix in ((ROOT / "radfm", ("radfm",)), (ROOT / "transforms", ("radfm", "transforms"))):
        for path in folder.rglob("*.py"):
            parts = prefix + path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _owning_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``radfm`` modules it imports anywhere in its source."""
    modules = _module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                targets.update(_owning_module(alias.name, modules) for alias in node.names if alias.name.startswith("radfm"))
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                if not source.startswith("radfm"):
                    continue
                for alias in node.names:  # `from pkg import submodule` imports the submodule
                    full = f"{source}.{alias.name}"
                    targets.add(full if full in modules else _owning_module(source, modules))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other (Tarjan, iterative); singletons left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def layer_of(module: str) -> tuple[str, int]:
    for depth in (2, 1):
        key = ".".join(module.split(".")[:depth])
        if key in LAYERS:
            return key, LAYERS[key]
    raise KeyError(module)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_scanner_sees_the_package(graph):
    assert "radfm.model.radfm" in graph and "radfm.transforms.readers" in graph
    assert "radfm.model.config" in graph["radfm.model.radfm"]


def test_the_cycle_finder_finds_a_planted_cycle():
    planted = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(planted) == [["a", "b", "c"]]


def test_no_import_cycles_inside_radfm(graph):
    cycles = strongly_connected(graph)
    assert not cycles, "modules that import each other (directly or through others): " + "; ".join(
        " <-> ".join(group) for group in cycles
    )


def test_every_module_belongs_to_a_layer(graph):
    unknown = sorted(module for module in graph if not any(
        module == key or module.startswith(key + ".") for key in LAYERS if key != "radfm"
    ) and module != "radfm")
    assert not unknown, f"add these packages to LAYERS and docs/architecture.md: {unknown}"


def test_layers_import_only_downwards(graph):
    upward = []
    for module, targets in graph.items():
        own_name, own = layer_of(module)
        for target in targets:
            target_name, level = layer_of(target)
            if level > own:
                upward.append(f"{module} ({own_name}) imports {target} ({target_name})")
    assert not upward, "imports against the layering of docs/architecture.md:\n" + "\n".join(sorted(upward))
