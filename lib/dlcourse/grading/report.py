"""grades.csv and the instructor's report (histogram, fraction of students failing each test).

grades.csv: one row per student: student, status (graded / late / failed), score, max_score,
one column per graded part, awaiting_manual_grading, reason (why a submission failed, or what
was repaired), flags (grading hooks the submission touched: review these by hand) and worker
(where it was graded: a Dask worker's address, `local`, or empty when it never ran). A failed
student has an empty score, never a silent 0.

A manually graded part (a written answer) that no human has graded yet reads "awaiting manual
grading" in its column and in the report; it counts neither as failed nor against the
percentage (score over the points graded so far) until someone grades it in formgrader.
"""
import base64
import csv
from pathlib import Path


AWAITING = "awaiting manual grading"


def is_graded(row: dict) -> bool:
    return row.get("status") in ("graded", "late")


def failing_fractions(rows: list[dict], maxima: dict) -> dict:
    """{part: fraction of graded students below full marks on it}, over the graded and late rows
    whose part has a score (parts awaiting manual grading are left out; a part nobody has a score
    for yet is not in the result)."""
    out = {}
    for part, m in maxima.items():
        scored = [r for r in rows if is_graded(r) and m and part not in r.get("pending", ())]
        if scored:
            out[part] = sum(r["parts"].get(part, 0) < m for r in scored) / len(scored)
    return out


def awaiting_counts(rows: list[dict], maxima: dict) -> dict:
    """{part: number of graded students whose part awaits manual grading} (parts with none left out)."""
    counts = {part: sum(part in r.get("pending", ()) for r in rows if is_graded(r)) for part in maxima}
    return {p: n for p, n in counts.items() if n}


def percent(row: dict, maxima: dict) -> float | None:
    """Score as a percentage of the points graded so far (pending manual parts are left out)."""
    graded_max = row["max_score"] - sum(maxima.get(p, 0) for p in row.get("pending", ()))
    return row["score"] / graded_max * 100 if graded_max > 0 else None


UNSANDBOXED = "graded WITHOUT a sandbox: student code ran with the grader's file access"

PAGE = """<html><head><meta charset="utf-8"><title>{{ assignment }} report</title></head><body>
<h1>{{ assignment }}</h1>
<p>{% for status, n in counts.items() %}{{ n }} {{ status }}{{ ", " if not loop.last }}{% endfor %}</p>
{% if not sandboxed %}<p><strong>Warning: {{ unsandboxed }}.</strong></p>{% endif %}
{% for png in images %}<img src="data:image/png;base64,{{ png }}">
{% endfor %}
{% macro table(cols, items) %}<table><tr>{% for c in cols %}<th>{{ c }}</th>{% endfor %}</tr>
{% for item in items %}<tr>{% for v in item %}<td>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>{% endmacro %}
<h2>Fraction failing each test</h2>
{{ table(["part", "fraction failing", "students scored", "manual grading"], parts) }}
<h2>Failed submissions</h2>
{{ table(["student", "reason"], failed) }}
<h2>Flagged for review</h2>
{{ table(["student", "flags"], flagged) }}
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


def write_outputs(out: Path, assignment: str, rows: list[dict], maxima: dict, sandboxed: bool = True) -> None:
    """grades.csv, histogram.png, failing_tests.png and report.html in `out`."""
    import jinja2

    from dlcourse.grading.charts import bars_png, histogram_png

    out = Path(out)
    write_csv(out / "grades.csv", rows, list(maxima))

    scores = [pc for pc in (percent(r, maxima) for r in rows if is_graded(r)) if pc is not None]
    hist = histogram_png(scores, title=f"{assignment}: grades", xlabel="score (% of the points graded so far)",
                         ylabel="students")
    (out / "histogram.png").write_bytes(hist)

    fractions = failing_fractions(rows, maxima)
    awaiting = awaiting_counts(rows, maxima)
    fails = bars_png(fractions, title=f"{assignment}: tests", xlabel="fraction of graded students failing")
    (out / "failing_tests.png").write_bytes(fails)

    counts = {s: sum(r["status"] == s for r in rows) for s in ("graded", "late", "failed")}
    n_graded = counts["graded"] + counts["late"]
    # autoescape: student ids, reasons, notes and flags carry the students' own text (a file name, an
    # exception's message), shown as text, never as HTML (tests/test_grader_hostile_html.py)
    page = jinja2.Environment(autoescape=True).from_string(PAGE).render(
        assignment=assignment, counts=counts, sandboxed=sandboxed, unsandboxed=UNSANDBOXED,
        images=[base64.b64encode(png).decode() for png in (hist, fails)],
        parts=[(p, f"{fractions[p]:.2f}" if p in fractions else "", n_graded - awaiting.get(p, 0),
                f"{AWAITING}: {awaiting[p]} students" if p in awaiting else "")
               for p in maxima if p in fractions or p in awaiting],
        failed=[(r["student"], r["reason"]) for r in rows if r["status"] == "failed"],
        flagged=[(r["student"], "; ".join(r["flags"])) for r in rows if r.get("flags")])
    (out / "report.html").write_text(page)
