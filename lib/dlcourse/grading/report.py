"""grades.csv and the instructor's report (histogram, fraction of students failing each test).

grades.csv: one row per student: student, status (graded / late / failed), score, max_score,
one column per graded part, reason (why a submission failed, or what was repaired) and flags
(grading hooks the submission touched: review these by hand). A failed student has an empty
score, never a silent 0.
"""
import base64
import csv
import html
import io
from pathlib import Path


def failing_fractions(rows: list[dict], maxima: dict) -> dict:
    """{part: fraction of graded students below full marks on it}, over graded and late rows."""
    graded = [r for r in rows if r.get("status") in ("graded", "late")]
    if not graded:
        return {}
    return {part: sum(r["parts"].get(part, 0) < m for r in graded) / len(graded)
            for part, m in maxima.items() if m}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def write_outputs(out: Path, assignment: str, rows: list[dict], maxima: dict) -> None:
    import matplotlib
    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    parts = list(maxima)
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "status", "score", "max_score", *parts, "reason", "flags"])
        for r in rows:
            graded = r["status"] in ("graded", "late")
            reason = r.get("reason") or "; ".join(r.get("notes", []))
            w.writerow([r["student"], r["status"],
                        f"{r['score']:g}" if graded else "", f"{r['max_score']:g}" if graded else "",
                        *[(f"{r['parts'].get(p, 0):g}" if graded else "") for p in parts],
                        reason, "; ".join(r.get("flags", []))])

    scores = [r["score"] / r["max_score"] * 100 for r in rows if r["status"] in ("graded", "late") and r["max_score"]]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(scores, bins=10, range=(0, 100), color="tab:blue")
    ax.set(xlabel="score (% of autograded points)", ylabel="students", title=f"{assignment}: grades")
    fig.tight_layout()
    hist = _png(fig)
    (out / "histogram.png").write_bytes(hist)

    fractions = failing_fractions(rows, maxima)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.barh(list(fractions), list(fractions.values()), color="tab:red")
    ax.set(xlim=(0, 1), xlabel="fraction of graded students failing", title=f"{assignment}: tests")
    fig.tight_layout()
    fails = _png(fig)
    (out / "failing_tests.png").write_bytes(fails)

    counts = {s: sum(r["status"] == s for r in rows) for s in ("graded", "late", "failed")}
    flagged = [r for r in rows if r.get("flags")]
    failed = [r for r in rows if r["status"] == "failed"]

    def img(data):
        return f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}">'

    def table(items, cols):
        head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in item) + "</tr>" for item in items)
        return f"<table><tr>{head}</tr>{body}</table>"

    page = [f"<html><head><meta charset='utf-8'><title>{html.escape(assignment)} report</title></head><body>",
            f"<h1>{html.escape(assignment)}</h1>",
            "<p>" + ", ".join(f"{n} {s}" for s, n in counts.items()) + "</p>",
            img(hist), img(fails),
            "<h2>Fraction failing each test</h2>",
            table([(p, f"{v:.2f}") for p, v in fractions.items()], ["part", "fraction failing"]),
            "<h2>Failed submissions</h2>", table([(r["student"], r["reason"]) for r in failed], ["student", "reason"]),
            "<h2>Flagged for review</h2>",
            table([(r["student"], "; ".join(r["flags"])) for r in flagged], ["student", "flags"]),
            "</body></html>"]
    (out / "report.html").write_text("\n".join(page))
