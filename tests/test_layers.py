"""Import layering, read from the syntax tree (function-local imports included, nothing imported).

- codegen is a compiler of its own: it imports neither qute nor TensorFlow/Keras;
- the library does not import its command line (qute.cli); only the entry points do;
- no module imports another one's private (underscored) names;
- the modules of qute import each other without a cycle (a submodule imports its package too,
  as Python runs the package's __init__ first).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("tensorflow", "keras", "tf_keras")


def imports(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it; `from X import y` counts as X and X.y."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return found


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_imports_are_read_from_the_whole_tree(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\ndef f():\n    from qute.cli import main\n    import tensorflow as tf\n")
    assert {"os", "qute.cli", "qute.cli.main", "tensorflow"} <= imports(f)


def test_codegen_imports_neither_qute_nor_tensorflow():
    bad = {}
    for f in _sources("codegen"):
        hits = sorted(m for m in imports(f) if m.split(".")[0] in ("qute", *HEAVY))
        if hits:
            bad[str(f.relative_to(ROOT))] = hits
    assert not bad, f"codegen must stand alone: {bad}"


def test_the_library_does_not_import_its_command_line():
    entry = {ROOT / "qute" / "cli.py", ROOT / "qute" / "__main__.py"}
    bad = [str(f.relative_to(ROOT)) for f in _sources("qute") if f not in entry
           and any(m == "qute.cli" or m.startswith("qute.cli.") for m in imports(f))]
    assert not bad, f"modules importing qute.cli: {bad}"


def test_no_module_imports_another_ones_private_names():
    bad = []
    for f in _sources("qute") + _sources("codegen"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                    and node.module.split(".")[0] in ("qute", "codegen")):
                bad += [f"{f.relative_to(ROOT)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, f"private names imported across modules: {bad}"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(files: list[Path]) -> dict[str, set[str]]:
    """Module -> the modules of `files` it imports (`from pkg import mod` counts as pkg.mod)."""
    names = {module_name(f): f for f in files}
    graph = {}
    for name, f in names.items():
        deps = {m for m in imports(f) if m in names}
        if "." in name:  # importing pkg.mod runs pkg/__init__.py first
            deps.add(name.rsplit(".", 1)[0])
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph) + 100))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_qute_has_no_import_cycle():
    graph = import_graph(_sources("qute"))
    for pkg in [m for m in graph if any(n.startswith(m + ".") for n in graph)]:
        # pkg/__init__.py re-exporting its submodules is not a cycle with them
        for sub in [n for n in graph if n.startswith(pkg + ".")]:
            graph[pkg].discard(sub)
    assert not cycles(graph), f"import cycles among qute's modules: {cycles(graph)}"
