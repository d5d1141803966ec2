"""grades.csv, the CSV files behind the report, and the instructor's report.html.

report.html is one self-contained file (its charts are data: URIs, its style inline, nothing
loaded from the network) that answers what an instructor asks after a deadline:

* per part: the score distribution and the most common mistakes, grouped by the message the
  tests gave (numbers in a message do not split a group), with the students behind each;
* answers that look copied: pairs of students per answer cell, side by side (similarity.py,
  copydetect), and answers that copy a function of the course library;
* the time each submission took (and where it went) and the cells that hit a limit;
* failed submissions, each with a reason a person can act on (nbgrader's "There was an error
  processing assignment: <path>" is replaced by what its log says was wrong with the notebook);
* submissions flagged for review.

CSV files for a spreadsheet, beside it: grades.csv (one row per student: student, status
(graded / late / failed), score, max_score, one column per graded part, awaiting_manual_grading,
reason (why a submission failed, or what was repaired), flags (grading hooks the submission
touched: review these by hand) and worker (a Dask worker's address, `local`, or empty when it
never ran); a failed student has an empty score, never a silent 0), mistakes.csv (part, message,
count, students), similarity.csv (cell, first, second, both similarities, kind: copied pair,
library twin, or same program: a crowd, its students all in `first`) and times.csv (student,
seconds, the stages, limits hit).

A manually graded part (a written answer) that no human has graded yet reads "awaiting manual
grading" in its column and in the report; it counts neither as failed nor against the
percentage (score over the points graded so far) until someone grades it in formgrader. A
written answer is never "failing": 1.5 of 2 is a grade, shown in its distribution; only the
automatic tests have a fraction failing.

The report reads each graded student's autograded notebooks once (each test cell's error, each
answer cell's code): linear in the class. The similarity pass imports copydetect (and with it
matplotlib.pyplot, about 1 s) only when there are answers to compare.
"""
import base64
import csv
import json
import re
import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path


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
                if meta.get("grade") and meta.get("solution"):
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


UNSANDBOXED = "graded WITHOUT a sandbox: student code ran with the grader's file access"

STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.25em .5em;text-align:left;
vertical-align:top}th{background:#f2f2f2}h2{border-bottom:2px solid #ddd;margin-top:1.6em}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:.6em;margin-bottom:1.2em}.pair pre{background:#f8f8f8;
border:1px solid #ddd;padding:.5em;overflow-x:auto;font-size:12px;margin:0}mark{background:#ffe08a}
.students{font-size:90%;color:#444}.warn{color:#b00}img{max-width:100%}.msg{font-family:monospace}"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ assignment }} report</title><style>{{ style }}</style></head><body>
<h1>{{ assignment }}</h1>
<p>{% for status, n in counts.items() %}{{ n }} {{ status }}{{ ", " if not loop.last }}{% endfor %}</p>
{% if not sandboxed %}<p class="warn"><strong>Warning: {{ unsandboxed }}.</strong></p>{% endif %}
{% macro table(cols, items, id="") %}<table{% if id %} id="{{ id }}"{% endif %}><tr>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for item in items %}<tr>{% for v in item %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endmacro %}
<nav><a href="#parts">Parts</a> · <a href="#copied">Answers that look copied</a> · <a href="#time">Time</a> ·
<a href="#failed">Failed</a> · <a href="#flagged">Flagged</a> · files: <a href="grades.csv">grades.csv</a>,
<a href="mistakes.csv">mistakes.csv</a>, <a href="similarity.csv">similarity.csv</a>, <a href="times.csv">times.csv</a></nav>
<img alt="grade histogram" src="data:image/png;base64,{{ images.histogram }}">
<img alt="fraction failing each test" src="data:image/png;base64,{{ images.failing }}">
<h2>Fraction failing each test</h2>
{{ table(["test", "fraction failing", "students scored"], tests, "failing") }}
{% if manual %}<h2>Written answers graded by hand</h2>
{{ table(["part", "graded", "mean score", "points", "awaiting manual grading"], manual, "manual") }}{% endif %}
<h2 id="parts">Parts: scores and the most common mistakes</h2>
{% for part in parts %}<section class="part" id="part-{{ part.name }}">
<h3>{{ part.name }} ({{ part.points }} point{{ "s" if part.points != "1" }}{{ ", graded by hand" if part.manual }})</h3>
<p>Scores: {% for score, n in part.distribution %}<b>{{ score }}</b>: {{ n }}{{ ", " if not loop.last }}{% else %}none yet{% endfor %}
{% if part.awaiting %}; {{ awaiting }}: {{ part.awaiting }} students{% endif %}</p>
{% if part.mistakes %}<table class="mistakes"><tr><th>message the tests gave</th><th>students</th><th>who</th></tr>
{% for message, students in part.mistakes %}<tr><td class="msg">{{ message }}</td><td>{{ students|length }}</td>
<td class="students">{{ students[:shown]|join(", ") }}{% if students|length > shown %} and {{ students|length - shown }} more (mistakes.csv){% endif %}</td></tr>
{% endfor %}</table>{% elif not part.manual %}<p>No student lost points here.</p>{% endif %}
</section>{% endfor %}
<h2 id="copied">Answers that look copied</h2>
<p>Each answer cell compared across the class with copydetect (names, comments and spacing ignored, the release's
code left out); pairs where {{ threshold }} % or more of one answer is in the other, and groups of more than
{{ common }} students with the same program. {{ compared }}</p>
{% for m in pairs %}<h3>{{ m.cell }}: {{ m.first }} and {{ m.second }} ({{ "%.0f"|format(100 * m.similarity[0]) }} % /
{{ "%.0f"|format(100 * m.similarity[1]) }} %)</h3>
<div class="pair copied"><pre>{{ m.first_html|safe }}</pre><pre>{{ m.second_html|safe }}</pre></div>
{% else %}<p>No pair of answers looks copied.</p>{% endfor %}
{% for c in crowds %}<h3>{{ c.cell }}: {{ c.students|length }} students with the same program (names and layout aside)</h3>
<p class="students">{{ c.students|join(", ") }}</p><div class="pair crowd"><pre>{{ c.code }}</pre></div>
{% endfor %}
<h3>Answers copied from the course library</h3>
{% for m in twins %}<h3>{{ m.cell }}: {{ m.first }} copies {{ m.second }} ({{ "%.0f"|format(100 * m.similarity[0]) }} % of the answer)</h3>
<div class="pair twin"><pre>{{ m.first_html|safe }}</pre><pre>{{ m.second_html|safe }}</pre></div>
{% else %}<p>No answer copies a function of the course library.</p>{% endfor %}
<h2 id="time">Time per submission</h2>
{% if times %}<p>{{ times.summary }}</p><img alt="time per submission" src="data:image/png;base64,{{ images.times }}">
{{ table(["student", "seconds"] + times.stages, times.slowest, "slowest") }}{% else %}<p>No timings.</p>{% endif %}
<h3>Cells that hit a limit</h3>
{{ table(["cell", "limit", "students"], limits, "limits") }}
<h2 id="failed">Failed submissions</h2>
{{ table(["student", "reason"], failed, "failed") }}
<h2 id="flagged">Flagged for review</h2>
{{ table(["student", "flags"], flagged, "flagged") }}
</body></html>
"""


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


def _rows_csv(path: Path, header: list, items) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(items)


_LIMIT = re.compile(r"^(.*): hit the (time|memory) limit$")


def cells_at_limits(rows: list[dict]) -> dict:
    """{(cell, "time" or "memory"): [students]} from the rows' notes (batch._cell_notes)."""
    hits = defaultdict(list)
    for r in rows:
        for note in r.get("notes", []):
            m = _LIMIT.match(note)
            if m:
                hits[(m.group(1), m.group(2))].append(r["student"])
    return dict(sorted(hits.items()))


def _times(rows: list[dict]) -> dict | None:
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


def _similarity(works: dict, layout: "Layout", library: Path | None):
    from dlcourse.grading import similarity
    cells = defaultdict(dict)
    for student, work in works.items():
        for gid, code in work.code.items():
            if gid in layout.answers:
                cells[gid][student] = code
    if not cells:
        return [], [], [], "No answer cells to compare."
    prints = similarity.fingerprint_cells(cells, layout.answers)
    pairs, crowds = similarity.compare_class(cells, layout.answers, prints=prints)
    with_library = bool(library) and Path(library).is_dir()
    twins = similarity.library_twins(cells, None, layout.answers, prints=prints,
                                     reference_prints=similarity.library_fingerprints(library)) if with_library else []
    compared = (f"{len(cells)} answer cells of {len(works)} students compared"
                f"{', and with the functions of ' + Path(library).name if with_library else ''}.")
    return pairs, crowds, twins, compared


def prepare_report(library: Path | None = LIBRARY) -> None:
    """What `write_outputs` would do first, done ahead (a grader runs it in a thread while its last
    submissions are graded): import the report's libraries and fingerprint the course library's
    functions (similarity.library_fingerprints keeps them). A failure here is left for
    `write_outputs` to meet and report."""
    try:
        import jinja2  # noqa: F401

        from dlcourse.grading import charts, similarity  # noqa: F401
        if library and Path(library).is_dir():
            similarity.library_fingerprints(library)
    except Exception:  # noqa: BLE001 -- write_outputs does it again and says what went wrong
        pass


def write_outputs(out: Path, assignment: str, rows: list[dict], maxima: dict, sandboxed: bool = True,
                  autograded: Path | None = None, release: Path | None = None, library: Path | None = LIBRARY) -> None:
    """grades.csv, mistakes.csv, similarity.csv, times.csv, histogram.png, failing_tests.png and
    report.html in `out`.

    autograded: the course's autograded/ folder (each graded student's notebooks are read for
    the tests' messages and the answers' code); release: the assignment's release folder (which
    cells are tests, written answers and answer cells, and the code every student starts from);
    library: the course library's folder (lib/dlcourse, this package's), for answers that copy its
    functions (None: not compared).
    Without them the report has scores only. The students' logs are read from out/logs."""
    import jinja2

    from dlcourse.grading.charts import bars_png, histogram_png

    out = Path(out)
    layout = Layout.read(release)
    # graded by hand: the release says so; without it, a part awaiting a person for anyone is one
    waiting = {p for r in rows for p in r.get("pending", ())}
    manual = [p for p in maxima if p in layout.manual or p in waiting]
    tests = [p for p in maxima if p not in layout.manual]

    failed = []
    for r in rows:
        if r["status"] == "failed":
            log = out / "logs" / f"{r['student']}.log"
            from_log = r.get("reason", "").startswith(OPAQUE) and log.is_file()
            text = log.read_text(errors="replace") if from_log else ""
            r["reason"] = actionable_reason(r.get("reason", ""), text)
            failed.append((r["student"], r["reason"]))
    write_csv(out / "grades.csv", rows, list(maxima))

    works = {r["student"]: read_work(Path(autograded) / r["student"] / assignment)
             for r in rows if is_graded(r) and autograded}

    scores = [pc for pc in (percent(r, maxima) for r in rows if is_graded(r)) if pc is not None]
    hist = histogram_png(scores, title=f"{assignment}: grades", xlabel="score (% of the points graded so far)",
                         ylabel="students")
    (out / "histogram.png").write_bytes(hist)

    fractions = failing_fractions(rows, maxima, manual)
    awaiting = awaiting_counts(rows, maxima)
    fails = bars_png(fractions, title=f"{assignment}: tests", xlabel="fraction of graded students failing")
    (out / "failing_tests.png").write_bytes(fails)

    mistakes = common_mistakes(rows, works, maxima, tests)
    _rows_csv(out / "mistakes.csv", ["part", "message", "count", "students"],
              [(p, msg, len(s), " ".join(s)) for p, groups in mistakes.items() for msg, s in groups])

    pairs, crowds, twins, compared = _similarity(works, layout, library)
    _rows_csv(out / "similarity.csv", ["cell", "first", "second", "similarity_first", "similarity_second", "kind"],
              [(m.cell, m.first, m.second, f"{m.similarity[0]:.3f}", f"{m.similarity[1]:.3f}", kind)
               for kind, found in (("copied pair", pairs), ("library twin", twins)) for m in found]
              + [(c.cell, " ".join(c.students), "", "1.000", "1.000", "same program") for c in crowds])

    times = _times(rows)
    limits = cells_at_limits(rows)
    _rows_csv(out / "times.csv", ["student", "seconds", *(times["stages"] if times else []), "limits hit"],
              [(r["student"], r.get("seconds", ""), *[r.get("stages", {}).get(s, "") for s in (times["stages"] if times else [])],
                "; ".join(n for n in r.get("notes", []) if _LIMIT.match(n))) for r in rows])
    images = {"histogram": hist, "failing": fails}
    if times:
        top = max(1.0, float(int(times["seconds"][-1]) + 1))
        images["times"] = histogram_png(times["seconds"], title=f"{assignment}: time per submission",
                                        xlabel="seconds", ylabel="submissions", hi=top)

    counts = {s: sum(r["status"] == s for r in rows) for s in ("graded", "late", "failed")}
    n_graded = counts["graded"] + counts["late"]
    graded_rows = [r for r in rows if is_graded(r)]

    def mean(part):
        values = [r["parts"][part] for r in graded_rows if part in r.get("parts", {}) and part not in r.get("pending", ())]
        return f"{statistics.mean(values):.2f}" if values else ""

    from dlcourse.grading.similarity import COMMON, THRESHOLD
    # autoescape: student ids, reasons, notes, flags and the tests' messages carry the students' own
    # text (a file name, an exception's message), shown as text, never as HTML
    # (tests/test_grader_hostile_html.py); the code of copied pairs is escaped by similarity.py
    page = jinja2.Environment(autoescape=True).from_string(PAGE).render(
        assignment=assignment, counts=counts, sandboxed=sandboxed, unsandboxed=UNSANDBOXED, style=STYLE,
        awaiting=AWAITING, shown=SHOWN_STUDENTS, threshold=f"{100 * THRESHOLD:.0f}", compared=compared,
        images={k: base64.b64encode(png).decode() for k, png in images.items()},
        tests=[(p, f"{fractions[p]:.2f}", n_graded - awaiting.get(p, 0)) for p in tests if p in fractions],
        manual=[(p, n_graded - awaiting.get(p, 0), mean(p), f"{maxima[p]:g}",
                 f"{awaiting[p]} students" if p in awaiting else "") for p in manual],
        parts=[{"name": p, "points": f"{maxima[p]:g}", "manual": p in manual, "awaiting": awaiting.get(p, 0),
                "distribution": [(f"{s:g}", n) for s, n in distribution(rows, p)], "mistakes": mistakes.get(p, [])}
               for p in maxima],
        pairs=pairs, crowds=crowds, common=COMMON, twins=twins, times=times,
        limits=[(cell, what, ", ".join(students)) for (cell, what), students in limits.items()],
        failed=failed,
        flagged=[(r["student"], "; ".join(r["flags"])) for r in rows if r.get("flags")])
    (out / "report.html").write_text(page)
