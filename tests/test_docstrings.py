"""Every example in a dlcourse docstring (`>>>`) runs and prints what it claims."""
import doctest
import importlib
import pkgutil

import pytest

import dlcourse

MODULES = sorted(m.name for m in pkgutil.walk_packages(dlcourse.__path__, "dlcourse.") if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) in {name} failed (run with -s to see them)"


def test_importing_the_library_does_no_work():
    """No seeding, device probing or heavy imports at import time (fastbook's habit we avoid)."""
    import subprocess
    import sys

    code = ("import sys, dlcourse, dlcourse.widgets; "
            "print(sorted(m for m in ('torch', 'ipywidgets', 'matplotlib', 'nbgrader') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", f"importing dlcourse imported {out}"
