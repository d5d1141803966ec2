"""The batch grader's bookkeeping: refusing to run unsandboxed, --unsandboxed, `make grade`,
flat LMS exports, Ctrl-C mid-batch, re-runs, and the report's manually graded parts.

Uses the tiny assignment (tests/fixtures/tiny_assignment.py) and a folder of submissions.
"""
import csv
import html
import io
import zipfile
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixtures.tiny_assignment import ASSIGNMENT, MANUAL, NOTEBOOK, POINTS
from nbgrader_harness import Course, solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading import cli
from dlcourse.grading.batch import kernel_reachable
from dlcourse.grading.report import UNSANDBOXED, write_outputs
from dlcourse.grading.report_tables import AWAITING, failing_fractions
from dlcourse.grading.state import read_state
from dlcourse.grading.submissions import collect

REPO = Path(__file__).resolve().parents[1]
FULL = sum(POINTS.values())


def make(tmp_path) -> Course:
    return tiny_course(tmp_path / "course")


def grade_cmd(course, folder, *extra):
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    return [sys.executable, "-m", "dlcourse.grading", "--assignment", ASSIGNMENT, "--submissions", str(folder),
            "--course-dir", str(course.root), "--cell-timeout", "5", "--budget", "30", "--quiet", *extra], env


def test_refuses_to_grade_without_a_sandbox(tmp_path, monkeypatch, capsys):
    root = tmp_path / "course"
    root.mkdir()
    shutil.copy(REPO / "nbgrader_config.py", root / "nbgrader_config.py")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bwrap-here"))
    code = cli.main(["--assignment", ASSIGNMENT, "--submissions", str(tmp_path), "--course-dir", str(root)])
    err = capsys.readouterr().err
    assert code == 2 and "bubblewrap" in err and "--unsandboxed" in err, err
    assert not (root / "submitted").exists(), "nothing may be graded when the sandbox cannot start"


def test_interrupted_batch_resumes_and_reruns_only_changes(tmp_path):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    course = make(tmp_path)
    folder = tmp_path / "subs"
    students = ["s1", "s2", "s3", "s4"]
    for s in students:
        (folder / s).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK), folder / s / f"{NOTEBOOK}.ipynb")
    state = course.path("grades", ASSIGNMENT, "state.json")

    cmd, env = grade_cmd(course, folder, "--workers", "1")
    # pytest-xdist workers ignore SIGINT, and children inherit that: give the grader the default back
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not read_state(state):   # state.json and the rows appended to its log
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)  # Ctrl-C after the first student
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again" in err, (proc.returncode, err[-1000:])
    done_before = set(json.loads(state.read_text()))   # compacted into state.json when interrupted
    assert 1 <= len(done_before) < len(students), f"the interrupt came too late to test anything: {done_before}"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    rows = json.loads(state.read_text())
    assert {s: rows[s]["score"] for s in students} == dict.fromkeys(students, FULL)
    logs = {s: course.path("grades", ASSIGNMENT, "logs", f"{s}.log").stat().st_mtime_ns for s in students}
    scores = course.scores(ASSIGNMENT, NOTEBOOK)
    assert all(scores[s]["graded"] for s in students), "the gradebook must hold every student after the re-run"

    nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, {"add": "def add(a, b):\n    return a - b"}),
                   folder / "s2" / f"{NOTEBOOK}.ipynb")
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0, third.stderr[-2000:]
    after = {s: course.path("grades", ASSIGNMENT, "logs", f"{s}.log").stat().st_mtime_ns for s in students}
    assert [s for s in students if after[s] != logs[s]] == ["s2"], "only the changed submission is graded again"
    assert json.loads(state.read_text())["s2"]["score"] == FULL - POINTS["test_add"]


def read_csv(course) -> dict:
    with open(course.path("grades", ASSIGNMENT, "grades.csv")) as f:
        return {r["student"]: r for r in csv.DictReader(f)}


UID_PROBE = "import os\nprint('kernel uid', os.getuid())\ndef add(a, b):\n    return a + b"


def kernel_uid(course, student) -> int:
    nb = course.read("autograded", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    return int(text.split("kernel uid ", 1)[1].split()[0])


def test_unsandboxed_grades_and_says_so(tmp_path):
    course = make(tmp_path)
    folder = tmp_path / "subs"
    (folder / "ann").mkdir(parents=True)
    nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, {"add": UID_PROBE}), folder / "ann" / f"{NOTEBOOK}.ipynb")
    cmd, env = grade_cmd(course, folder, "--unsandboxed", "--workers", "1")
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    env["PATH"] += os.pathsep + str(tmp_path / "no-bwrap")  # bwrap may be on /usr/bin: it must not matter
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WITHOUT a sandbox" in proc.stderr and "(unsandboxed)" in proc.stdout, (proc.stdout, proc.stderr[-500:])
    row = read_csv(course)["ann"]
    assert (row["status"], row["score"]) == ("graded", str(FULL)), row
    assert UNSANDBOXED in html.unescape(course.path("grades", ASSIGNMENT, "report.html").read_text())
    if os.geteuid() == 0 and kernel_reachable():
        assert kernel_uid(course, "ann") != 0, "without the sandbox the kernel still drops root"


# `make test` runs pytest under make: the inner make must not inherit its flags or jobserver
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


def test_make_grade_runs_the_whole_batch_from_a_zip(tmp_path):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    course = make(tmp_path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # as an LMS exports it: flat names with submission ids
        zf.writestr(f"kim_1001_2002_{NOTEBOOK}.ipynb", nbformat.writes(solved(course, ASSIGNMENT, NOTEBOOK)))
        zf.writestr(f"lee_1003_2004_{NOTEBOOK}.ipynb", nbformat.writes(
            solved(course, ASSIGNMENT, NOTEBOOK, {"add": "def add(a, b):\n    return a - b"})))
    export = tmp_path / "export.zip"
    export.write_bytes(buf.getvalue())
    args = f"--course-dir {course.root} --workers 2 --cell-timeout 5 --budget 30 --quiet"
    proc = subprocess.run(["make", "-s", "-C", str(REPO), "grade", f"ASSIGNMENT={ASSIGNMENT}",
                           f"SUBMISSIONS={export}", f"GRADE_ARGS={args}"],
                          capture_output=True, text=True, timeout=300, env=MAKE_ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "2 students: 2 graded, 0 late, 0 failed" in proc.stdout, proc.stdout
    rows = read_csv(course)
    assert (rows["kim"]["score"], rows["lee"]["score"]) == (str(FULL), str(FULL - POINTS["test_add"])), rows
    for name in ("report.html", "histogram.png", "failing_tests.png"):
        assert course.path("grades", ASSIGNMENT, name).stat().st_size > 0, name
    assert course.path("feedback", "lee", ASSIGNMENT, f"{NOTEBOOK}.html").exists()
    assert course.path("submitted", "kim", ASSIGNMENT, f"{NOTEBOOK}.ipynb").exists()
    assert (rows["kim"]["written"], rows["kim"]["awaiting_manual_grading"]) == (AWAITING, "written"), rows["kim"]
    assert "awaiting manual grading: 2 students" in course.path("grades", ASSIGNMENT, "report.html").read_text()

    from nbgrader.api import Gradebook  # a human grades kim's written answer; the next run shows it
    with Gradebook(f"sqlite:///{course.path('gradebook.db')}", "dlcourse") as gb:
        gb.find_grade("written", NOTEBOOK, ASSIGNMENT, "kim").manual_score = MANUAL["written"]
        gb.db.commit()
    again = subprocess.run(proc.args, capture_output=True, text=True, timeout=300, env=MAKE_ENV)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    rows = read_csv(course)
    assert (rows["kim"]["score"], rows["kim"]["written"], rows["kim"]["awaiting_manual_grading"]) == \
        (str(FULL + MANUAL["written"]), "1", ""), rows["kim"]
    assert rows["lee"]["written"] == AWAITING, rows["lee"]


def test_flat_lms_names_map_to_students_and_notebooks(tmp_path):
    export = tmp_path / "export.zip"
    with zipfile.ZipFile(export, "w") as zf:
        zf.writestr("alice_12345_67890_tiny.ipynb", b"a")            # Canvas-style
        zf.writestr("bob_LATE_12345_67890_tiny-1.ipynb", b"b")       # late resubmission, renamed by the LMS
        zf.writestr("carol/tiny.ipynb", b"c")                         # folder per student
        zf.writestr("carol/timestamp.txt", b"2025-01-01 10:00:00")
        zf.writestr("__MACOSX/carol/._tiny.ipynb", b"junk")
    found = collect(export, ["tiny"])
    assert found == {"alice": {"tiny.ipynb": b"a"}, "bob": {"tiny-1.ipynb": b"b"},
                     "carol": {"tiny.ipynb": b"c", "timestamp.txt": b"2025-01-01 10:00:00"}}, found
    folder = tmp_path / "submitted" / "dora" / ASSIGNMENT  # what `nbgrader collect` leaves in submitted/
    folder.mkdir(parents=True)
    (folder / "tiny.ipynb").write_bytes(b"d")
    (folder / "timestamp.txt").write_bytes(b"2025-01-01 11:00:00")
    assert collect(tmp_path / "submitted", ["tiny"], ASSIGNMENT) == \
        {"dora": {"tiny.ipynb": b"d", "timestamp.txt": b"2025-01-01 11:00:00"}}
    with zipfile.ZipFile(export, "w") as zf:
        zf.writestr("../evil_1_tiny.ipynb", b"x")
        zf.writestr("bad id!_1_tiny.ipynb", b"x")
    with pytest.raises(ValueError, match="cannot read a student id"):
        collect(export, ["tiny"])


MAXIMA = {"test_add": 2, "written": 1}


def row(student, add, written=None, status="graded"):
    """A graded row; written=None: the written answer awaits manual grading."""
    parts = {"test_add": add, "written": written or 0}
    return {"student": student, "status": status, "score": add + (written or 0), "max_score": 3, "parts": parts,
            "pending": [] if written is not None else ["written"], "flags": [], "notes": []}


def test_parts_awaiting_manual_grading_are_not_failures(tmp_path):
    rows = [row("a", 2), row("b", 0), row("c", 2, written=1), row("d", 2, written=0),
            {"student": "e", "status": "failed", "reason": "the kernel died", "flags": []}]
    fractions = failing_fractions(rows, MAXIMA)
    assert fractions == {"test_add": 0.25, "written": 0.5}, "pending parts count neither as failed nor as passed"
    assert failing_fractions(rows[:2], MAXIMA) == {"test_add": 0.5}, "a part nobody has graded yet has no fraction"

    write_outputs(tmp_path, ASSIGNMENT, rows, MAXIMA)
    with open(tmp_path / "grades.csv") as f:
        table = {r["student"]: r for r in csv.DictReader(f)}
    assert table["a"]["written"] == AWAITING and table["a"]["awaiting_manual_grading"] == "written"
    assert table["c"]["written"] == "1" and table["c"]["awaiting_manual_grading"] == ""
    assert table["e"]["written"] == "" and table["e"]["score"] == ""
    page = (tmp_path / "report.html").read_text()
    assert f"{AWAITING}: 2 students" in page, "the report must say how many answers wait for a human"


@pytest.mark.skipif(os.geteuid() != 0, reason="kernel uids are switched only when grading as root")
def test_concurrent_batches_never_share_a_kernel_uid():
    from dlcourse.grading.cage import claim_uids
    first, first_locks = claim_uids(2)
    second, second_locks = claim_uids(3)
    try:
        assert len(set(first) | set(second)) == 5, f"two batches got overlapping uids: {first} and {second}"
        assert all(u >= 60000 for u in first + second), "kernels must never get root's or a system uid"
    finally:
        for fd in first_locks:
            os.close(fd)
    again, again_locks = claim_uids(2)
    for fd in second_locks + again_locks:
        os.close(fd)
    assert again == first, "uids are free again once their batch has ended"


def test_report_escapes_names_and_draws_its_charts_without_matplotlib(tmp_path):
    """No matplotlib (its import would cost a batch more than the whole report; nor does the
    report touch the backend of a notebook that imported it): two PNG charts of SIZE, embedded."""
    code = f"""
import sys
from pathlib import Path
from dlcourse.grading.report import write_outputs
rows = [dict(student="<script>a</script>", status="graded", score=2.0, max_score=4.0, parts={{}}, flags=["builtins"]),
        dict(student="e", status="failed", reason="<b>bad</b> & worse", flags=[])]
write_outputs(Path({str(tmp_path)!r}), "ps_x", rows, {{"test_a": 2.0, "test_b": 2.0}})
print("matplotlib" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False", "the report imported matplotlib"
    page = (tmp_path / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page and "&lt;b&gt;bad&lt;/b&gt; &amp; worse" in page
    from PIL import Image

    from dlcourse.grading.charts import SIZE
    for name in ("histogram.png", "failing_tests.png"):
        with Image.open(tmp_path / name) as image:
            assert (image.format, image.size) == ("PNG", SIZE)
    assert page.count('src="data:image/png;base64,') == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-20, max_value=120, allow_nan=False), max_size=40),
       st.integers(min_value=1, max_value=12))
def test_histogram_counts_as_numpy_does(values, bins):
    import numpy as np

    from dlcourse.grading.charts import histogram_counts
    expected, _ = np.histogram(values, bins=bins, range=(0, 100))
    assert histogram_counts(values, bins, 0, 100) == expected.tolist()


def test_the_charts_draw_each_bar_where_its_value_says():
    """Taller bins and longer bars for bigger values, in the right place."""
    from PIL import Image

    from dlcourse.grading.charts import BLUE, RED, bars_png, histogram_png
    hist = Image.open(io.BytesIO(histogram_png([95.0, 96.0, 15.0], "t", "x", "y")))
    blue = [(x, y) for x in range(hist.width) for y in range(hist.height) if hist.getpixel((x, y)) == BLUE]
    xs = sorted({x for x, _ in blue})
    left_bin = [y for x, y in blue if x < hist.width / 2]
    right_bin = [y for x, y in blue if x > hist.width / 2]
    assert min(right_bin) < min(left_bin), "two students in the 90s, one in the 10s: the right bar is taller"
    assert xs[0] > hist.width * 0.15 and xs[-1] > hist.width * 0.85   # the 0-10 bin is empty, the 90-100 one is not
    bars = Image.open(io.BytesIO(bars_png({"full": 1.0, "none": 0.0, "half": 0.5}, "t", "x")))
    red_rows = {}
    for y in range(bars.height):
        reds = [x for x in range(bars.width) if bars.getpixel((x, y)) == RED]
        if reds:
            red_rows[y] = max(reds) - min(reds)
    widths = sorted(set(red_rows.values()))
    assert len(widths) == 2 and abs(widths[1] - 2 * widths[0]) <= 2, widths   # 1.0 twice as long as 0.5, 0.0 none


def test_cli_defaults_come_from_the_settings(monkeypatch):
    from dlcourse.grading.batch import Settings
    from dlcourse.grading.sandbox import Limits
    args = cli.build_parser().parse_args(["--assignment", "a", "--submissions", "s"])
    assert (args.workers, args.budget) == (Settings().workers, Settings().budget)
    assert (args.cpu_seconds, args.memory_mb, args.processes, args.total_memory_mb, args.scratch_mb) == \
        (Limits().cpu_seconds, Limits().memory_mb, Limits().processes, Limits().total_memory_mb, Limits().scratch_mb)
    monkeypatch.setenv("DLCOURSE_CELL_TIMEOUT", "77")
    assert Settings().cell_timeout == 77, "dlcourse-grade must honour DLCOURSE_CELL_TIMEOUT like nbgrader_config.py"


def test_cli_explains_a_bad_due_date(capsys):
    with pytest.raises(SystemExit) as info:
        cli.build_parser().parse_args(["--assignment", "a", "--submissions", "s", "--duedate", "next friday"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "due date must look like 2025-03-01 17:00, got 'next friday'" in err, err


def test_autograde_keeps_nbgraders_preprocessors_with_execute_swapped():
    from nbgrader.converters import Autograde
    from dlcourse.grading.batch import autograde_preprocessors
    from dlcourse.grading.sandbox import SandboxedExecute
    from dlcourse.grading.sanitize import SanitizeStudentOutput
    default = Autograde.class_traits()["autograde_preprocessors"].default()
    got = autograde_preprocessors(SandboxedExecute)
    assert len(got) == len(default) + 1 and got[0] is SandboxedExecute and got[-1] is SanitizeStudentOutput
    assert [p for p in got[:-1] if p is not SandboxedExecute] == default[1:]


def test_a_plain_nbgrader_autograde_cleans_student_html_too():
    """`make autograde` (stock nbgrader with the course's config) stores what formgrader renders:
    its preprocessors end with SanitizeStudentOutput as the batch's do."""
    from traitlets.config.loader import PyFileConfigLoader
    config = PyFileConfigLoader("nbgrader_config.py", path=str(Path(__file__).resolve().parents[1])).load_config()
    assert config.Autograde.autograde_preprocessors[-1] == "dlcourse.grading.sanitize.SanitizeStudentOutput"
