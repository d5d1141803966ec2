"""Run: the modules an assignment's notebooks import: what the kernel template preloads and what
the batch's warm-up reads once, before the workers fork.

    notebook_imports(sorted(Path("solutions/ps_convolution").glob("*.ipynb")))  ->  ["dlcourse.conv", "torch", ...]
"""
import ast
import functools
import json
import os
from pathlib import Path


def notebook_imports(paths) -> list[str]:
    """The modules that the code cells of these notebooks import (`import a.b`, `from a.b import
    c`: a.b; relative imports and cells that are not plain Python are left out), sorted. Each
    notebook is read once per process while unchanged (a batch's forks inherit what it read)."""
    return sorted(set().union(*(_imports_of(str(p), os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in paths)))


@functools.lru_cache(maxsize=64)
def _imports_of(path: str, mtime_ns: int, size: int) -> frozenset:
    """notebook_imports of one notebook as it is at (mtime_ns, size)."""
    found = set()
    for cell in (c for c in json.loads(Path(path).read_text()).get("cells", []) if c.get("cell_type") == "code"):
        try:
            tree = ast.parse(cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"]))
        except SyntaxError:   # IPython syntax (magics, shell escapes)
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
    return frozenset(found)
