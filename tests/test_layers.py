"""Import layering, read from the syntax tree (function-local imports included, nothing imported).

- codegen is a compiler of its own: it imports neither qute nor TensorFlow/Keras;
- the library does not import its command line (qute.cli); only the entry points do;
- no module imports another one's private (underscored) names.
"""

from __future__ import annotations

import ast
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
