"""The import graph among ``training`` modules is a tree-like DAG: no module imports, directly or
through others, one that imports it back. Imports are read from the source with ``ast``, wherever
they stand (top level or inside a function, since a function-local import is how a cycle hides), and
relative imports are resolved against the importing module's package."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]


def module_name(path: Path, root: Path) -> str:
    """``root/training/stages/common.py`` -> ``training.stages.common``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The modules of ``known`` that the module ``name`` at ``path`` imports. ``from P import X``
    counts as importing ``P.X`` where that is a module, else ``P``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module
            found |= {f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names}
    # `import training.a.b` names training.a.b, the closest known module above an unknown name stands in
    resolved = set()
    for module in found:
        while module and module not in known:
            module = module.rpartition(".")[0]
        if module:
            resolved.add(module)
    return resolved - {name}


def import_graph(root: Path, top: str = "training") -> nx.DiGraph:
    """Modules under ``root/top`` as nodes; an edge A -> B where A imports B."""
    paths = {module_name(p, root): p for p in sorted((root / top).rglob("*.py"))}
    graph = nx.DiGraph()
    graph.add_nodes_from(paths)
    for name, path in paths.items():
        graph.add_edges_from((name, target) for target in imported_modules(path, name, set(paths)))
    return graph


def test_relative_and_local_imports_resolve(tmp_path):
    package = tmp_path / "training" / "pkg"
    package.mkdir(parents=True)
    (tmp_path / "training" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("from .a import f\n")
    (package / "a.py").write_text("def f():\n    from ..other import g\n    from . import b\n")
    (package / "b.py").write_text("import training.pkg.a\n")
    (tmp_path / "training" / "other.py").write_text("from training.pkg import a\n")
    graph = import_graph(tmp_path)
    assert set(graph.edges) == {("training.pkg", "training.pkg.a"), ("training.pkg.a", "training.other"),
                                ("training.pkg.a", "training.pkg.b"), ("training.pkg.b", "training.pkg.a"),
                                ("training.other", "training.pkg.a")}


def test_no_import_cycle_among_training_modules():
    graph = import_graph(ROOT)
    assert len(graph) > 50 and graph.has_edge("training.train", "training.models")
    starting_lowest = ([*c[c.index(min(c)):], *c[:c.index(min(c))]] for c in nx.simple_cycles(graph))  # a stable message
    cycles = sorted(" -> ".join([*c, c[0]]) for c in starting_lowest)
    assert not cycles, "import cycles among training modules:\n" + "\n".join(cycles)
