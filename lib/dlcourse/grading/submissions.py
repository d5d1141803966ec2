"""Submissions as an LMS hands them out, checked before anything runs.

Accepted layouts (a zip file or a folder):

    <student>/<notebook>.ipynb            (plus any other files; <student>/timestamp.txt if known)
    <student>/<assignment>/<notebook>.ipynb  (nbgrader's submitted/ after `nbgrader collect`)
    <student>_<ids>_<notebook>.ipynb      (flat LMS export; the student is the part before the first _,
                                           numeric ids and a LATE marker are dropped from the file name)

`collect` returns {student: {relative name: bytes}}; the bytes are stored unmodified in submitted/.
`validate` reads one notebook's bytes against the assignment's source notebook and says whether it
can be graded (and what was repaired) before a kernel ever starts.
"""
import hashlib
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

MAX_FILE_MB = 50
STUDENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}$")
FLAT_PREFIX = re.compile(r"^((\d+|LATE)_)+")  # the LMS's submission ids and late marker before the file name


def _add(found: dict, rel: PurePosixPath, data: bytes, notebooks: set[str], assignment: str | None = None) -> None:
    parts = [p for p in rel.parts if p not in ("", ".")]
    if not parts or any(p.startswith((".", "__MACOSX")) or p == ".." for p in parts):
        return
    if assignment and len(parts) >= 3 and parts[-2] == assignment:  # nbgrader's submitted/<student>/<assignment>/
        student, name = parts[-3], parts[-1]
    elif len(parts) >= 2:
        student, name = parts[-2], parts[-1]
    else:  # flat export: alice_12345_convolution.ipynb, alice_LATE_12345_67890_convolution-1.ipynb
        student, _, rest = parts[0].partition("_")
        name = next((f"{nb}.ipynb" for nb in notebooks if rest.endswith(f"_{nb}.ipynb") or rest == f"{nb}.ipynb"),
                    FLAT_PREFIX.sub("", rest))
    if not STUDENT_ID.match(student):
        raise ValueError(f"cannot read a student id from {str(rel)!r}: ids are letters, digits and ._@+-")
    found.setdefault(student, {})[name] = data


def collect(source: str | Path, notebooks: list[str], assignment: str | None = None) -> dict[str, dict[str, bytes]]:
    """Read a zip or a folder of submissions into {student: {file name: bytes}}. With `assignment`,
    nbgrader's own layout <student>/<assignment>/<file> (what `nbgrader collect` makes) is read too."""
    source = Path(source)
    found: dict[str, dict[str, bytes]] = {}
    if source.is_dir():
        for path in sorted(source.rglob("*")):
            if path.is_file() and not path.is_symlink():
                _add(found, PurePosixPath(path.relative_to(source).as_posix()), path.read_bytes(), set(notebooks), assignment)
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                if info.file_size > MAX_FILE_MB * 2**20:
                    raise ValueError(f"{info.filename} in {source} is larger than {MAX_FILE_MB} MB")
                _add(found, PurePosixPath(info.filename), zf.read(info), set(notebooks), assignment)
    else:
        raise ValueError(f"submissions must be a zip file or a folder, got {source}")
    return found


def digest(files: dict[str, bytes]) -> str:
    """sha256 over a student's file names and contents (re-grading is skipped when it is unchanged)."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


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
            if meta.get("grade") and not meta.get("solution") and cell["cell_type"] == "code":
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
