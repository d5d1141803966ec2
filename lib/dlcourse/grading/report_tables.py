"""Render: the numbers behind the report (report.py): the release's layout, each student's work,
the common mistakes, failing fractions, score distributions, actionable failure reasons and
the CSV files (grades.csv, mistakes.csv, similarity.csv, times.csv).
"""
import csv
import json
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from dlcourse.grading.cells import is_graded_by_hand


AWAITING = "awaiting manual grading"
LIBRARY = Path(__file__).resolve().parents[1]   # lib/dlcourse: the reference twins of the answers
NO_MESSAGE = "(no error: the test gave partial credit)"
SHOWN_STUDENTS = 40   # students named per mistake in the HTML (all of them in mistakes.csv)


def is_graded(row: dict) -> bool:
    return row.get("status") in ("graded", "late")


@dataclass
class Layout:
    """What the release says about each graded cell: automatic tests, parts graded by hand,
    answer cells (code the students write) with the release's code for them."""
    tests: list = field(default_factory=list)
    manual: list = field(default_factory=list)
    answers: dict = field(default_factory=dict)   # grade id -> the release's source

    @classmethod
    def read(cls, release: Path | None) -> "Layout":
        layout = cls()
        for path in sorted(Path(release).glob("*.ipynb")) if release else []:
            for cell in json.loads(path.read_text())["cells"]:
                meta = cell.get("metadata", {}).get("nbgrader", {})
                gid, source = meta.get("grade_id"), "".join(cell.get("source", ""))
                if not gid:
                    continue
                if is_graded_by_hand(cell):
                    layout.manual.append(gid)
                elif meta.get("grade"):
                    layout.tests.append(gid)
                if meta.get("solution") and cell.get("cell_type") == "code":
                    layout.answers[gid] = source
        return layout


@dataclass
class Work:
    """What the report reads from one student's autograded notebooks."""
    messages: dict = field(default_factory=dict)   # test cell -> its error, "Name: message"
    code: dict = field(default_factory=dict)       # answer cell -> its source


def read_work(folder: Path) -> Work:
    """The first error of every graded cell and the source of every answer cell of the notebooks
    in `folder` (autograded/<student>/<assignment>)."""
    work = Work()
    for path in sorted(Path(folder).glob("*.ipynb")):
        try:
            cells = json.loads(path.read_text())["cells"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        for cell in cells:
            meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell, dict) else {}
            gid = meta.get("grade_id")
            if not gid or cell.get("cell_type") != "code":
                continue
            if meta.get("solution"):
                work.code[gid] = "".join(cell.get("source", ""))
            if meta.get("grade"):
                errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
                if errors:
                    ename, evalue = str(errors[0].get("ename", "Error")), str(errors[0].get("evalue", ""))
                    work.messages[gid] = f"{ename}: {evalue}".strip()[:400]
    return work


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def mistake_key(message: str) -> str:
    """The group of a test's message: its first line with every number replaced by #."""
    first = (message.strip().splitlines() or [""])[0]
    return _NUMBER.sub("#", first)


def common_mistakes(rows: list[dict], works: dict, maxima: dict, tests: list) -> dict:
    """{test: [(message, [students])]} of the graded students below full marks on each test,
    grouped by the message the test gave (mistake_key), largest group first; a group's message is
    its most frequent wording."""
    out = {}
    for part in tests:
        groups, wordings = defaultdict(list), defaultdict(Counter)
        for r in rows:
            if is_graded(r) and part in r.get("parts", {}) and r["parts"][part] < maxima.get(part, 0):
                message = works.get(r["student"], Work()).messages.get(part, NO_MESSAGE)
                key = mistake_key(message)
                groups[key].append(r["student"])
                wordings[key][message] += 1
        out[part] = sorted(((wordings[k].most_common(1)[0][0], sorted(s)) for k, s in groups.items()),
                           key=lambda item: (-len(item[1]), item[0]))
    return out


def failing_fractions(rows: list[dict], maxima: dict, manual=()) -> dict:
    """{test: fraction of graded students below full marks on it}, over the graded and late rows
    whose part has a score. Parts graded by hand (`manual`) are not tests and are left out, as are
    parts awaiting manual grading and a part nobody has a score for yet."""
    out = {}
    for part, m in maxima.items():
        if part in manual:
            continue
        scored = [r for r in rows if is_graded(r) and m and part not in r.get("pending", ())]
        if scored:
            out[part] = sum(r["parts"].get(part, 0) < m for r in scored) / len(scored)
    return out


def awaiting_counts(rows: list[dict], maxima: dict) -> dict:
    """{part: number of graded students whose part awaits manual grading} (parts with none left out)."""
    counts = {part: sum(part in r.get("pending", ()) for r in rows if is_graded(r)) for part in maxima}
    return {p: n for p, n in counts.items() if n}


def distribution(rows: list[dict], part: str) -> list[tuple[float, int]]:
    """[(score, students)] of the graded students with a score on `part`, highest score first."""
    counts = Counter(r["parts"][part] for r in rows
                     if is_graded(r) and part in r.get("parts", {}) and part not in r.get("pending", ()))
    return sorted(counts.items(), reverse=True)


def percent(row: dict, maxima: dict) -> float | None:
    """Score as a percentage of the points graded so far (pending manual parts are left out)."""
    graded_max = row["max_score"] - sum(maxima.get(p, 0) for p in row.get("pending", ()))
    return row["score"] / graded_max * 100 if graded_max > 0 else None


# What nbgrader's exceptions mean for the notebook, in words an instructor can act on; the first
# pattern found in the exception line of the student's log wins.
NBGRADER_ERRORS = [
    (r"jsonschema|nbgrader metadata|KeyError: '?(?:nbgrader|grade_id|points|schema_version)",
     "a cell's nbgrader metadata was edited ({detail}): ask the student to copy their answers into a fresh copy "
     "of the release"),
    (r"NotebookValidationError|nbformat|JSONDecodeError|Notebook does not appear to be JSON",
     "the notebook file is not a valid notebook ({detail}): ask for the file again, saved from JupyterLab"),
    (r"MissingEntry|No (?:grade|solution|source) cell",
     "a graded cell of the notebook does not match the assignment (a cell's nbgrader id was changed or the cell "
     "was replaced: {detail}): ask the student to copy their answers into a fresh copy of the release"),
    (r"SchemaTooOld|SchemaTooNew",
     "the notebook's nbgrader metadata is of another version ({detail}): ask for a copy made from this release"),
    (r"NoSuchKernel",
     "the notebook asks for a kernel that is not installed ({detail}): ask the student to use the Python kernel"),
]
# nbgrader's reasons that say nothing about the notebook: the log's traceback says more
OPAQUE = ("There was an error processing assignment", "Traceback (most recent call last)", "autograding failed")
_EXCEPTION_LINE = re.compile(r"^\s*(?:\[\w+\]\s*)?([A-Za-z_][\w.]*(?:Error|Exception|Entry)\b.*)$")


def actionable_reason(reason: str, log: str = "") -> str:
    """A failed row's reason in words a person can act on: where nbgrader said only "There was an
    error processing assignment: <path>" (or the first line of a traceback), the first exception
    of the student's log says what was wrong with the notebook."""
    if not reason.startswith(OPAQUE):
        return reason
    causes = [m.group(1) for m in map(_EXCEPTION_LINE.match, log.splitlines())
              if m and "NbGraderException" not in m.group(1)]
    if not causes:
        return ("nbgrader could not process the notebook and its log names no cause: open the log and the "
                "submitted file")
    detail = causes[0][:240]
    for pattern, text in NBGRADER_ERRORS:
        if re.search(pattern, detail):
            return text.format(detail=detail)
    return f"nbgrader could not process the notebook ({detail})"


def write_csv(path: Path, rows: list[dict], parts: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "status", "score", "max_score", *parts, "awaiting_manual_grading", "reason", "flags",
                    "worker"])
        for r in rows:
            graded = is_graded(r)
            pending = r.get("pending", []) if graded else []
            reason = r.get("reason") or "; ".join(r.get("notes", []))
            w.writerow([r["student"], r["status"],
                        f"{r['score']:g}" if graded else "", f"{r['max_score']:g}" if graded else "",
                        *[(AWAITING if p in pending else f"{r['parts'].get(p, 0):g}") if graded else "" for p in parts],
                        " ".join(pending), reason, "; ".join(r.get("flags", [])), r.get("worker", "")])


def rows_csv(path: Path, header: list, items) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(items)


LIMIT_NOTE = re.compile(r"^(.*): hit the (time|memory) limit$")


def cells_at_limits(rows: list[dict]) -> dict:
    """{(cell, "time" or "memory"): [students]} from the rows' notes (batch._cell_notes)."""
    hits = defaultdict(list)
    for r in rows:
        for note in r.get("notes", []):
            m = LIMIT_NOTE.match(note)
            if m:
                hits[(m.group(1), m.group(2))].append(r["student"])
    return dict(sorted(hits.items()))


def time_summary(rows: list[dict]) -> dict | None:
    timed = [r for r in rows if isinstance(r.get("seconds"), (int, float))]
    if not timed:
        return None
    seconds = sorted(r["seconds"] for r in timed)
    stages = sorted({k for r in timed for k in r.get("stages", {}) if not k.endswith("_mb")})
    p90 = seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))]
    slowest = sorted(timed, key=lambda r: -r["seconds"])[:10]
    return {"seconds": seconds, "stages": stages,
            "summary": f"{len(seconds)} submissions: median {statistics.median(seconds):.1f} s, 90th percentile "
                       f"{p90:.1f} s, slowest {seconds[-1]:.1f} s, {sum(seconds):.0f} s in all.",
            "slowest": [(r["student"], f"{r['seconds']:.1f}", *[f"{r.get('stages', {}).get(s, 0):.2f}" for s in stages])
                        for r in slowest]}
