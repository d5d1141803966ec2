"""Render: the instructor's report.html (grades.csv and the CSV files behind it: report_tables.py).

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
import statistics
from collections import defaultdict
from pathlib import Path

from dlcourse.grading.report_tables import (AWAITING, LIBRARY, LIMIT_NOTE, OPAQUE, SHOWN_STUDENTS, Layout,
                                            actionable_reason, awaiting_counts, cells_at_limits, common_mistakes,
                                            distribution, failing_fractions, is_graded, percent, read_work,
                                            rows_csv, time_summary, write_csv)

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
                                     reference_prints=similarity.library_fingerprints(library),
                                     reference_holders=similarity.library_holders(library)) if with_library else []
    compared = (f"{len(cells)} answer cells of {len(works)} students compared"
                f"{', and with the functions of ' + Path(library).name if with_library else ''}.")
    return pairs, crowds, twins, compared


def prepare_report(library: Path | None = LIBRARY) -> None:
    """What `write_outputs` would do first, done ahead (a grader runs it in a thread while its last
    submissions are graded): import the report's libraries and fingerprint the course library's
    functions (similarity.library_fingerprints keeps them, with the index of their hashes). A failure here is left for
    `write_outputs` to meet and report."""
    try:
        import jinja2  # noqa: F401

        from dlcourse.grading import charts, similarity  # noqa: F401
        similarity.import_copydetect()   # without pyplot (similarity.py)
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
    rows_csv(out / "mistakes.csv", ["part", "message", "count", "students"],
              [(p, msg, len(s), " ".join(s)) for p, groups in mistakes.items() for msg, s in groups])

    pairs, crowds, twins, compared = _similarity(works, layout, library)
    rows_csv(out / "similarity.csv", ["cell", "first", "second", "similarity_first", "similarity_second", "kind"],
              [(m.cell, m.first, m.second, f"{m.similarity[0]:.3f}", f"{m.similarity[1]:.3f}", kind)
               for kind, found in (("copied pair", pairs), ("library twin", twins)) for m in found]
              + [(c.cell, " ".join(c.students), "", "1.000", "1.000", "same program") for c in crowds])

    times = time_summary(rows)
    limits = cells_at_limits(rows)
    rows_csv(out / "times.csv", ["student", "seconds", *(times["stages"] if times else []), "limits hit"],
              [(r["student"], r.get("seconds", ""), *[r.get("stages", {}).get(s, "") for s in (times["stages"] if times else [])],
                "; ".join(n for n in r.get("notes", []) if LIMIT_NOTE.match(n))) for r in rows])
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
