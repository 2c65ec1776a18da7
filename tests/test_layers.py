"""Layers only point down: which parts of pnerf_fast import which, checked from the source.

Every ``.py`` file under ``pnerf_fast/`` is parsed (``ast``; nothing is imported), and
each ``import`` of ``pnerf_fast`` code, wherever it sits (module level or inside a
function: a lazy import is still a dependency), becomes an edge between two *units*: a
subpackage (``pnerf_fast/field/``) or a top-level module (``pnerf_fast/export.py``).

The rules (docs: ARCHITECTURE.md, "Layers only point down"):

1. every unit has a layer in ``LAYERS`` (a private ``_*`` module is a bottom-layer helper);
2. no unit imports a unit of a higher layer;
3. units of one layer may import each other one way only: the whole graph has no cycle.

``ALLOWED`` lists the edges that break a rule today, each with its reason. An import
that breaks a rule and is not listed fails; so does a listed edge that no longer
exists (remove it from the list). ``python tests/test_layers.py`` prints the graph.
"""
from __future__ import annotations

import ast
import collections
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "pnerf_fast"

#: The layer of each unit: a unit may import units of its own layer or lower ones.
LAYERS = {
    # 0: the compiled extension and private helpers (safe YAML and atomic writes, native
    #    loading, build flags); any other "_name" module lands here too
    "_C": 0,
    "_native": 0,
    "_io": 0,
    "_build_config": 0,
    # 1: the leaf everyone stands on: cameras, the rig, the canonical box, grid geometry
    "geometry": 1,
    # 2: one module per kernel family
    "ops": 2,
    # 3: encodings, MLPs, the field and its presets
    "field": 3,
    # 4: beside one another, above the field: photos and the canonical face, the subject
    #    format and the light stage, the renderer, and the image metrics
    "face": 4,
    "data": 4,
    "render": 4,
    "metrics": 4,
    # 5: what drives or reads a trained field: training, mesh export, the viewer
    "train": 5,
    "export": 5,
    "viewer": 5,
    # 6: the Python API and the evaluation protocol
    "api": 6,
    "evaluate": 6,
    # 7: the package root (backend_info, the lazy API) and the commands
    "__init__": 7,
    "commands": 7,
    # 8: the `pnerf` entry point
    "cli": 8,
}

#: Edges that break a rule today: (importer, imported) -> why. Empty: keep it so.
ALLOWED: dict[tuple[str, str], str] = {}


def _unit(module: str) -> str:
    """'pnerf_fast.field.mlp' -> 'field'; 'pnerf_fast' -> '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(unit: str) -> int | None:
    if unit in LAYERS:
        return LAYERS[unit]
    return 0 if unit.startswith("_") and unit != "__init__" else None


#: Compiled modules, which may not be built where the test runs.
EXTENSIONS = {"_C"}


def _is_module(parts: list[str]) -> bool:
    p = PACKAGE.parent.joinpath(*parts)
    return p.with_suffix(".py").is_file() or p.is_dir() or (len(parts) == 2 and parts[1] in EXTENSIONS)


def _imports(path: Path) -> list[tuple[str, int]]:
    """The pnerf_fast modules ``path`` imports, as (dotted name, line)."""
    rel = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = rel[:-1]  # where the file's relative imports start (its own package, for an __init__ too)
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                out.append((node.module, node.lineno))
                continue
            base = package[: len(package) - node.level + 1]
            if node.module:
                out.append((".".join(base + node.module.split(".")), node.lineno))
            else:  # from .. import x: a module x, or a name defined in the package
                for a in node.names:
                    target = base + [a.name]
                    out.append((".".join(target if _is_module(target) else base), node.lineno))
    return [(m, line) for m, line in out if m == "pnerf_fast" or m.startswith("pnerf_fast.")]


def import_graph() -> dict[tuple[str, str], list[str]]:
    """(importer unit, imported unit) -> the import sites ('field/config.py:17')."""
    edges = collections.defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _unit(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        for module, line in _imports(path):
            dst = _unit(module)
            if dst != src:
                edges[(src, dst)].append(f"{path.relative_to(PACKAGE).as_posix()}:{line}")
    return dict(edges)


def _cycles(edges) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    graph = collections.defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(graph) | {b for bs in graph.values() for b in bs}):
        if v not in index:
            visit(v)
    return out


def report(edges=None) -> str:
    """The graph, one importer per line, with each imported unit's layer."""
    edges = import_graph() if edges is None else edges
    by_src = collections.defaultdict(list)
    for (a, b), sites in edges.items():
        by_src[a].append((b, sites))
    lines = []
    for a in sorted(by_src, key=lambda u: (_layer(u) if _layer(u) is not None else 99, u)):
        targets = ", ".join(
            f"{b}({_layer(b)}){' ALLOWED' if (a, b) in ALLOWED else ''}" for b, _ in sorted(by_src[a]))
        lines.append(f"{a}({_layer(a)}) -> {targets}")
    return "\n".join(lines)


def _sites(edges, key) -> str:
    return ", ".join(edges[key][:6]) + (" ..." if len(edges[key]) > 6 else "")


def test_the_graph_is_found():
    edges = import_graph()
    # a few edges that are meant to be there, so a broken parser cannot pass by finding nothing
    assert ("render", "field") in edges and ("field", "ops") in edges and ("cli", "commands") in edges
    assert ("ops", "_native") in edges and ("_native", "_C") in edges


def test_every_unit_has_a_layer():
    edges = import_graph()
    units = {u for e in edges for u in e}
    units |= {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
              if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    missing = sorted(u for u in units if _layer(u) is None)
    assert not missing, f"no layer for {missing}: add them to LAYERS in tests/test_layers.py"


def test_no_import_runs_up_a_layer():
    edges = import_graph()
    bad = [f"{a}({_layer(a)}) -> {b}({_layer(b)}) at {_sites(edges, (a, b))}"
           for (a, b) in sorted(edges)
           if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a) and (a, b) not in ALLOWED]
    assert not bad, "imports up a layer:\n  " + "\n  ".join(bad) + "\n\n" + report(edges)


def test_no_two_units_import_each_other():
    edges = import_graph()
    cycles = _cycles([e for e in edges if e not in ALLOWED])
    assert not cycles, (
        "import cycles between units (each must import the other one way only):\n  "
        + "\n  ".join(" <-> ".join(c) + ": " + "; ".join(
            f"{a}->{b}{' (allowed)' if (a, b) in ALLOWED else ''} at {_sites(edges, (a, b))}"
            for a in c for b in c if (a, b) in edges) for c in cycles)
        + "\n\n" + report(edges))


def test_allowed_edges_still_exist_and_still_break_a_rule():
    """A listed exception that was fixed comes off the list (so it cannot come back)."""
    edges = import_graph()
    gone = sorted(e for e in ALLOWED if e not in edges)
    assert not gone, f"fixed, remove from ALLOWED in tests/test_layers.py: {gone}"
    cyclic = {(a, b) for c in _cycles(list(edges)) for a in c for b in c}
    needless = sorted(e for e in ALLOWED if (_layer(e[1]) or 0) <= (_layer(e[0]) or 0) and e not in cyclic)
    assert not needless, f"these edges break no rule, remove from ALLOWED: {needless}"


if __name__ == "__main__":
    print(report())
