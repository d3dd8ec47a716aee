"""The benchmarks' README tables: each lives between `<!-- NAME -->` and `<!-- /NAME -->`."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def replace(name: str, text: str, path: Path = README) -> None:
    """Puts `text` between the section's markers; LookupError when README.md has no such section."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    readme = path.read_text()
    a, b = readme.find(start), readme.find(end)
    if a < 0 or b < a:
        raise LookupError(f"README.md has no {start} ... {end} section to rewrite")
    path.write_text(readme[: a + len(start)] + "\n" + text + "\n" + readme[b:])
