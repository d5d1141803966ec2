"""Intake: is a submitted notebook fit to be graded? Checked on its bytes, before a kernel ever starts.

    chosen, message = pick_notebook(files, "convolution")   # the file to grade as convolution.ipynb
    verdict = validate(files[chosen], source_nb)            # JSON, format, cells, grade ids, kernelspec

A Verdict says whether the notebook can be graded, why not, what was repaired (`notes`) and the
student's own code (`editable_sources`, which integrity.static_scan reads).
"""
import json
from dataclasses import dataclass, field

from dlcourse.grading.cells import is_autograded_test
from dlcourse.grading.submissions import MAX_FILE_MB


@dataclass
class Verdict:
    """Whether a notebook can be graded; `notes` are repairs worth telling the instructor."""
    ok: bool
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    editable_sources: list[str] = field(default_factory=list)


def grade_cells(source_nb: dict) -> tuple[set[str], set[str]]:
    """(all nbgrader grade ids, ids of autograded test cells) of the instructor's notebook."""
    ids, tests = set(), set()
    for cell in source_nb["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("grade_id"):
            ids.add(meta["grade_id"])
            if is_autograded_test(cell):
                tests.add(meta["grade_id"])
    return ids, tests


def validate(data: bytes, source_nb: dict) -> Verdict:
    """Check one submitted notebook (raw bytes) against the instructor's source notebook."""
    if len(data) > MAX_FILE_MB * 2**20:
        return Verdict(False, f"the notebook is larger than {MAX_FILE_MB} MB")
    try:
        nb = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        return Verdict(False, f"the notebook file is not valid JSON ({e}); was it saved completely?")
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return Verdict(False, "the file is JSON but not a notebook (no list of cells)")
    if nb.get("nbformat") != 4:
        return Verdict(False, f"notebook format version {nb.get('nbformat')!r}; the course uses 4")
    _, test_ids = grade_cells(source_nb)
    seen, verdict = {}, Verdict(True)
    for i, cell in enumerate(nb["cells"]):
        if not isinstance(cell, dict) or cell.get("cell_type") not in ("code", "markdown", "raw"):
            return Verdict(False, f"cell {i} is not a valid notebook cell")
        meta = cell.get("metadata", {}).get("nbgrader")
        gid = meta.get("grade_id") if isinstance(meta, dict) else None
        if gid:
            if meta.get("schema_version") != 3:
                return Verdict(False, f"cell {gid!r} has nbgrader schema_version {meta.get('schema_version')!r}, "
                                      "the course uses 3: download the release again and copy your answers over")
            if gid in seen:
                return Verdict(False, f"grade id {gid!r} appears in cells {seen[gid]} and {i}: "
                                      "a graded cell was copied or split; keep one cell per part")
            seen[gid] = i
            if gid in test_ids and cell["cell_type"] != "code":
                verdict.notes.append(f"test cell {gid!r} had been turned into {cell['cell_type']}; restored")
        source = cell.get("source", "")
        source = "".join(source) if isinstance(source, list) else str(source)
        if cell["cell_type"] == "code" and gid not in test_ids:
            verdict.editable_sources.append(source)
    kernel = nb.get("metadata", {}).get("kernelspec", {})
    name = kernel.get("name") if isinstance(kernel, dict) else None
    if name != "python3":
        verdict.notes.append(f"kernelspec {name!r} replaced by the course's Python 3 kernel")
    return verdict


def pick_notebook(files: dict[str, bytes], notebook: str) -> tuple[str | None, str]:
    """The submitted file to grade as <notebook>.ipynb, and a note or an error message.
    A single notebook under another name (e.g. 'convolution (1).ipynb') is graded with a note."""
    expected = f"{notebook}.ipynb"
    if expected in files:
        return expected, ""
    others = sorted(n for n in files if n.endswith(".ipynb"))
    if len(others) == 1:
        return others[0], f"{others[0]!r} graded as {expected}"
    if not others:
        return None, f"no {expected} in the submission"
    return None, f"no {expected} in the submission, and several other notebooks: {', '.join(others)}"
