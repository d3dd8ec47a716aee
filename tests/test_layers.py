"""Import layering, read from the syntax tree (function-local imports included, nothing imported).

- codegen is a compiler of its own: it imports neither qute nor TensorFlow/Keras;
- the library does not import its command line (qute.cli); only the entry points do;
- no module imports another one's private (underscored) names;
- the modules of qute import each other without a cycle (a submodule imports its package too,
  as Python runs the package's __init__ first);
- an import inside a function is of a heavy optional library (HEAVY_OPTIONAL), or of a module
  that loads one at its top which the importing module does not load; everything else is
  imported at the top, where a reader sees what a module depends on.
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


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
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


# A function-local import is kept for the libraries below only: each is slow to load or missing on
# some installs, and a module importing it at its top would make every user of that module pay.
HEAVY_OPTIONAL = {
    "tensorflow": "seconds to load; only training, quantization and the float stage use it",
    "keras": "loads TensorFlow",
    "tf_keras": "loads TensorFlow",
    "matplotlib": "only the plots of eval and monitor",
    "scipy": "only a few corruptions, OOD sets and the temperature fit",
    "sklearn": "only the metrics and the digits dataset",
    "ray": "only qute sweep, an optional extra",
    "serial": "pyserial: only qute run --port, an optional extra",
    "tflite_micro": "loads TFLite Micro's C++ runtime; only the oracle and its callers",
    "ai_edge_litert": "LiteRT's interpreter: the oracle's second reference, for models TFLM mis-runs",
}


def _imported(node) -> list[str]:
    """The modules an import statement may load (`from X import y`: X, and X.y when y is a module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    return [node.module] + [f"{node.module}.{a.name}" for a in node.names]


def split_imports(path: Path) -> tuple[list[str], list[tuple[ast.stmt, list[str]]]]:
    """(modules imported when the file is, [(statement, modules) of each import inside a function]).

    An import under `if TYPE_CHECKING:` never runs, so it counts as neither."""
    top, local = [], []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and ast.unparse(child.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)) and getattr(child, "level", 0) == 0:
                if in_function:
                    local.append((child, _imported(child)))
                else:
                    top.extend(_imported(child))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), False)
    return top, local


def heavy_at_import(files: list[Path], root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the HEAVY_OPTIONAL libraries that importing it loads, following the imports at
    the top of the first-party modules (and the packages each one runs first)."""
    names = {module_name(f, root): f for f in files}
    top = {name: split_imports(f)[0] for name, f in names.items()}
    memo: dict[str, set[str]] = {}

    def loads(name: str) -> set[str]:
        if name not in memo:
            memo[name] = set()  # an import cycle ends here (another test fails on one)
            found = set()
            parts = name.split(".")
            for parent in (".".join(parts[:i]) for i in range(1, len(parts))):
                if parent in names:
                    found |= loads(parent)
            for m in top[name]:
                if m in names:
                    found |= loads(m)
                elif m.split(".")[0] in HEAVY_OPTIONAL:
                    found.add(m.split(".")[0])
            memo[name] = found
        return memo[name]

    return {name: loads(name) for name in names}


def local_import_problems(files: list[Path], root: Path = ROOT) -> list[str]:
    """The function-local imports of `files` that could be at the top of their module: of a light
    library, or of a module of `files` that loads no HEAVY_OPTIONAL library the importing module
    does not."""
    heavy = heavy_at_import(files, root)
    bad = []
    for f in files:
        own = heavy[module_name(f, root)]
        for node, modules in split_imports(f)[1]:
            where = f"{f.relative_to(root)}:{node.lineno}: {ast.unparse(node)}"
            ours = [m for m in modules if m in heavy]
            if ours:
                if not any(heavy[m] - own for m in ours):
                    bad.append(f"{where} (loads nothing heavy that {module_name(f, root)} does not: import it at the top)")
            elif modules[0].split(".")[0] not in HEAVY_OPTIONAL:
                bad.append(f"{where} (not a heavy optional library)")
    return bad


def test_local_imports_are_found(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import json\n"
                 "def f():\n    import re\n    import tensorflow as tf\n    from matplotlib import pyplot\n")
    top, local = split_imports(f)
    assert "os" in top and "json" not in top
    assert [node.lineno for node, _ in local] == [6, 7, 8]
    assert local_import_problems([f], tmp_path) == ["m.py:6: import re (not a heavy optional library)"]


def test_a_local_import_of_a_module_that_loads_a_heavy_library_is_allowed(tmp_path):
    (tmp_path / "plots.py").write_text("import matplotlib\n")
    (tmp_path / "light.py").write_text("import json\n")
    (tmp_path / "m.py").write_text("def f():\n    import plots\n    import light\n")
    files = sorted(tmp_path.glob("*.py"))
    assert heavy_at_import(files, tmp_path) == {"plots": {"matplotlib"}, "light": set(), "m": set()}
    assert [b.split(" (")[0] for b in local_import_problems(files, tmp_path)] == ["m.py:3: import light"]


def test_heavy_is_followed_through_first_party_modules():
    heavy = heavy_at_import(_sources("qute") + _sources("codegen"))
    assert "tensorflow" in heavy["qute.train"]  # imports it at its top
    assert heavy["qute.cli"] == set() and heavy["codegen"] == set()


def test_function_local_imports_only_for_heavy_optional_libraries():
    bad = local_import_problems(_sources("qute") + _sources("codegen"))
    assert not bad, "function-local imports of light modules:\n" + "\n".join(bad)
