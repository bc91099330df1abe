"""No import cycle in report/ or analyses/, counting the imports inside functions.

A function-local import hides a cycle from Python (the module is complete by the time the function runs) but not
from a reader: the two modules still lean on each other. So the graph is read from the source (every `import`
and `from ... import` anywhere in the file's syntax tree), not from what Python happens to execute.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("report", "analyses")


def module_files() -> dict[str, Path]:
    """Every module of the two packages by dotted name (a package by the name of its folder)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The known modules `name` imports anywhere in its file.

    `from package import thing` imports the submodule package.thing when there is one, else a name defined in
    the package's __init__ (an edge to the package). Importing a submodule runs its package's __init__ first, but
    that is Python's loading order, not a dependency of the importer, so it adds no edge.
    """
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            edges |= {alias.name for alias in node.names if alias.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: climb from this module's package
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:
                    edges.add(f"{base}.{alias.name}")
                elif base in known:
                    edges.add(base)
    edges.discard(name)
    return edges


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported_modules(name, path, set(files)) for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted, in sorted order."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_sees_a_cycle_closed_by_a_function_local_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (package / "c.py").write_text("def g():\n    import pkg.a\n")
    (package / "d.py").write_text("from . import a\nfrom .b import f\n")
    files = {"pkg": package / "__init__.py", **{f"pkg.{n}": package / f"{n}.py" for n in "abcd"}}
    graph = {name: imported_modules(name, path, set(files)) for name, path in files.items()}
    assert graph["pkg.d"] == {"pkg.a", "pkg.b"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    (package / "c.py").write_text("def g():\n    pass\n")
    graph["pkg.c"] = imported_modules("pkg.c", package / "c.py", set(files))
    assert cycles(graph) == []


def test_report_and_analyses_have_no_import_cycle():
    graph = import_graph()
    assert "report.run.catalogue" in graph and "analyses.engine.rows" in graph  # the walk found the packages
    found = cycles(graph)
    assert found == [], "import cycles (function-local imports included): " + "; ".join(
        " <-> ".join(component) for component in found)


def test_analyses_never_imports_report():
    """The maths stands on its own floor: nothing in analyses/ reaches up into report/ (ARCHITECTURE.md)."""
    graph = import_graph()
    upward = sorted(f"{name} -> {target}" for name, targets in graph.items() if name.startswith("analyses")
                    for target in targets if target.split(".")[0] == "report")
    assert upward == []


# Each layer may import only the layers named here (its own package always). A registered analysis is a module of
# analyses/ outside the three sub-packages; `report` alone (cli, boundary, errors, bundled_name) is the top of report/.
LAYERS = {
    "analyses.common": set(),
    "analyses.engine": {"analyses.common"},
    "analyses.methods": {"analyses.common", "analyses.engine"},
    "analyses (registered)": {"analyses.common", "analyses.engine", "analyses.methods", "analyses (registry)"},
    "report.store": {"report", "analyses (registered)", "analyses (registry)", "analyses.common"},
    "report.run": {"report", "report.store", "analyses (registered)", "analyses (registry)", "analyses.common",
                   "analyses.engine", "analyses.methods"},
    "report.publish": {"report", "report.store", "analyses (registered)", "analyses (registry)", "analyses.common",
                       "analyses.methods"},
}


def layer_of(module: str) -> str:
    """The layer a module belongs to: its sub-package, 'analyses (registered)' / '(registry)', or 'report'."""
    parts = module.split(".")
    if parts[0] == "analyses":
        if len(parts) == 1:
            return "analyses (registry)"
        return ".".join(parts[:2]) if parts[1] in ("common", "engine", "methods") else "analyses (registered)"
    return ".".join(parts[:2]) if len(parts) > 1 and parts[1] in ("run", "store", "publish") else "report"


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{name} ({layer_of(name)}) -> {target} ({layer_of(target)})"
                  for name, targets in graph.items() if layer_of(name) in LAYERS
                  for target in targets if layer_of(target) not in LAYERS[layer_of(name)] | {layer_of(name)})


def test_the_layers_import_only_downward():
    """store below run and publish, which never import each other; common below engine below methods below the
    registered analyses (issue 20: folders that show the layers)."""
    graph = import_graph()
    assert {layer_of(name) for name in graph} >= set(LAYERS)  # every layer has modules: the walk found them
    assert layer_violations(graph) == []


def test_the_layer_check_sees_a_publishing_module_that_imports_the_run_side():
    graph = {"report.publish.abstract": {"report.run.bundled"}, "analyses.common.types": {"analyses.engine.rows"},
             "report.run.pipeline": {"report.store.results"}}
    assert layer_violations(graph) == [
        "analyses.common.types (analyses.common) -> analyses.engine.rows (analyses.engine)",
        "report.publish.abstract (report.publish) -> report.run.bundled (report.run)"]
