"""The grader's layout: modules that import one way, stay small, say their step, and keep their
private names to themselves.

No kernel runs here: the import graph and the docstrings are read with `ast`; each grading module
is imported alone, in a fork of a Python that holds the outside packages they use but none of the
course's modules (an import circle shows there as an ImportError whichever module of the circle
comes first).
"""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GRADING = ROOT / "lib" / "dlcourse" / "grading"
PACKAGE = "dlcourse.grading"
MODULES = sorted(p.stem for p in GRADING.glob("*.py"))
MAX_LINES = 400
STEPS = ("Intake", "Cage", "Run", "Render", "Record", "Shared")   # "Shared": used by several steps

LONGER: set = set()   # modules allowed past MAX_LINES (none)


def imported_grading_modules(path: Path) -> set[str]:
    """The dlcourse.grading modules `path` imports, at its top level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith(PACKAGE + "."):
                stem = name[len(PACKAGE) + 1:].split(".")[0]
                if stem in MODULES:
                    found.add(stem)
    return found


def import_graph() -> dict[str, set[str]]:
    return {m: imported_grading_modules(GRADING / f"{m}.py") - {m} for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph` as [a, b, ..., a]; [] when there is none."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_grading_modules_import_one_way():
    graph = import_graph()
    assert graph["batch"] and graph["cluster"], "the graph reads the imports"
    assert find_cycle(graph) == []


ALONE = """
import json, os, sys, traceback
names = json.loads(sys.argv[1])
read, write = os.pipe()
if os.fork() == 0:   # a child imports every grading module: which outside modules do they use?
    for name in names:
        try:
            __import__(f"dlcourse.grading.{name}")
        except BaseException:
            pass
    outside = [m for m in sorted(sys.modules) if m.split(".")[0] != "dlcourse" and not m.startswith("_")]
    os.write(write, json.dumps(outside).encode())
    os._exit(0)
os.close(write)
outside = json.loads(b"".join(iter(lambda: os.read(read, 1 << 16), b"")))
os.wait()
for module in outside:   # imported once here: no circle of the course's modules can hide in them
    try:
        __import__(module)
    except BaseException:
        pass
course = [m for m in sys.modules if m.split(".")[0] == "dlcourse"]
assert not course, f"an outside module imported the course's: {course}"
for name in names:   # each grading module alone, in a fork of this Python that holds none of the course's modules
    pid = os.fork()
    if pid == 0:
        try:
            __import__(f"dlcourse.grading.{name}")
        except BaseException:
            print(name, traceback.format_exc().strip().splitlines()[-1], flush=True)
        os._exit(0)
    os.waitpid(pid, 0)
"""


def test_each_grading_module_imports_alone():
    names = [m for m in MODULES if m != "__main__"]
    done = subprocess.run([sys.executable, "-c", ALONE, json.dumps(names)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", f"modules that fail to import alone:\n{done.stdout}"


@pytest.mark.parametrize("name", MODULES)
def test_a_grading_module_is_small(name):
    lines = len((GRADING / f"{name}.py").read_text().splitlines())
    assert name in LONGER or lines <= MAX_LINES, f"{name}.py has {lines} lines (at most {MAX_LINES})"


@pytest.mark.parametrize("name", MODULES)
def test_a_grading_module_says_its_step(name):
    doc = ast.get_docstring(ast.parse((GRADING / f"{name}.py").read_text())) or ""
    step = doc.split(":", 1)[0]
    assert step in STEPS, f"{name}.py's docstring must open with its step, one of {STEPS}: {doc[:80]!r}"


def test_no_test_imports_a_private_name_of_the_library():
    private = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dlcourse"):
                private += [f"{path.name}:{node.lineno}: {node.module}.{a.name}"
                            for a in node.names if a.name.startswith("_")]
    assert private == []
