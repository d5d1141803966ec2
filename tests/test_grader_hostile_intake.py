"""The batch grader against submissions that reach for other students or for the grading host
through their files and their output (sibling of test_grader_hostile.py, same tiny assignment).

Two defences are tested, and each test names the one that catches its case:
- the intake (submissions.intake): each top-level entry of an export is one student and nothing
  inside it names another; ids are NFC Unicode; links are not followed; sizes are checked before
  anything is read and only the assignment's files are taken; a bad entry gets its own failed row
  and the batch goes on. `_store` writes a student's files only to submitted/<student>/<assignment>/.
- the output caps (SandboxedExecute): output is kept up to a number of bytes per cell and per
  notebook as it arrives, with a visible note; the kernel's own stdout/stderr reach the log
  only up to a number of bytes.

`export` is one folder export graded by the CLI in a child process (its peak memory, every
process of the batch included, is measured); `in_place` grades the course's own submitted/
folder, as after `nbgrader collect`. The unit tests at the end need neither root nor a kernel.
"""
import io
import json
import os
import resource
import stat
import subprocess
import sys
import unicodedata
import zipfile
from pathlib import Path

import nbformat
import pytest

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, POINTS
from nbgrader_harness import solved, tiny_course
from system_packages import ensure_debian_packages

from dlcourse.grading import submissions as subs
from dlcourse.grading.batch import Settings, grade_batch
from dlcourse.grading.sandbox import Limits

WRONG_MEAN = {"mean": "def mean(xs):\n    return 0.0"}
FLOOD = ("import os\nfor i in range(256):\n    print('x' * 2**20)\n"            # 256 lines of 1 MB, through IOPub
         "for i in range(64):\n    os.write(1, b'y' * 2**20 + b'\\n')\n"           # and 64 MB to the kernel's own fd 1
         "def add(a, b):\n    return a + b")
SPARSE_GB = 2
PEAK_MB = 1536   # the batch's biggest process today holds the 2 GB file; a kernel and a worker stay well under
# the CLI in a child process: its exit code and the peak resident memory of the batch's biggest process
RUN = """import json, resource, sys
from dlcourse.grading.cli import main
code = main(sys.argv[1:])
peak = max(resource.getrusage(r).ru_maxrss for r in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
print("RESULT", json.dumps({"exit": code, "peak_mb": peak / 1024}))
"""


def _nb(nb) -> bytes:
    return nbformat.writes(nb).encode()


def _put(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("course")
    course = tiny_course(root)
    honest = _nb(solved(course, ASSIGNMENT, NOTEBOOK))
    release = _nb(course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb"))
    src = root.parent / "export"
    elsewhere = root.parent / "elsewhere"
    files = {
        "alice/tiny.ipynb": honest,                                   # the victim
        "mallory/tiny.ipynb": _nb(solved(course, ASSIGNMENT, NOTEBOOK, WRONG_MEAN)),
        "mallory/alice/tiny.ipynb": release,                          # would replace alice's work
        "mallory/nobody/tiny.ipynb": release,                         # would invent a student
        "José/tiny.ipynb": honest,
        "carol/tiny.ipynb": honest,
        "carol/My Drive/notes.txt": b"my notes",
        "carol/My Drive/tiny.ipynb": release,                         # carol's own draft, not graded
        "dora/My Drive/tiny.ipynb": honest,                           # a zipped folder, unpacked by the LMS
        "eve*/tiny.ipynb": honest,                                    # '*' is a glob to nbgrader: no id
        "hugo/tiny.ipynb": honest,
        "ivan/tiny.ipynb": _nb(solved(course, ASSIGNMENT, NOTEBOOK, {"add": FLOOD})),
    }
    for name, data in files.items():
        _put(src / name, data)
    _put(elsewhere / "frank" / "tiny.ipynb", honest)
    (src / "frank").symlink_to(elsewhere / "frank", target_is_directory=True)   # a student that is a link
    _put(elsewhere / "gina.ipynb", honest)
    (src / "gina").mkdir()
    (src / "gina" / "tiny.ipynb").symlink_to(elsewhere / "gina.ipynb")           # a student whose only file is a link
    with open(src / "hugo" / "data.bin", "wb") as f:                              # sparse: takes no disk
        f.truncate(SPARSE_GB * 2**30)

    args = ["--assignment", ASSIGNMENT, "--submissions", str(src), "--course-dir", str(root), "--workers", "2",
            "--cell-timeout", "20", "--budget", "120", "--memory-mb", "1536", "--processes", "40",
            "--cpu-seconds", "60", "--quiet"]
    proc = subprocess.run([sys.executable, "-c", RUN, *args], cwd=root, capture_output=True, text=True, timeout=900)
    result = next((json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines()
                   if line.startswith("RESULT ")), None)
    assert result is not None, proc.stdout[-3000:] + proc.stderr[-3000:]
    state_path = course.path("grades", ASSIGNMENT, "state.json")
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    return course, result, state, proc


def assert_graded(rows, student, parts):
    row = rows.get(student)
    assert row is not None, f"{student} has no row (rows: {sorted(rows)})"
    assert row["status"] == "graded", f"{student}: {row['status']}: {row.get('reason')}"
    got = {k: v for k, v in row["parts"].items() if k in POINTS}
    assert got == parts, f"{student}: parts {got}, expected {parts}"


def assert_failed(rows, name, *words):
    row = rows.get(name)
    assert row is not None, f"{name!r} has no row (rows: {sorted(rows)})"
    assert row["status"] == "failed" and all(w in row["reason"] for w in words), row


def test_the_batch_is_never_aborted_by_one_entry(export):
    """Defence: the intake. Every bad entry fails alone; the batch ends with 1 (some failed), not 2."""
    _, result, state, proc = export
    assert result["exit"] == 1, proc.stderr[-3000:]
    assert set(state) == {"alice", "mallory", "José", "carol", "dora", "eve*", "frank", "gina", "hugo", "ivan"}, \
        sorted(state)


def test_a_folder_inside_a_submission_never_becomes_another_student(export):
    """Defence: the intake (one top-level entry is one student). Before: alice scored 0 with
    mallory's notebook and 'nobody' was graded."""
    _, _, state, _ = export
    assert_graded(state, "alice", POINTS)
    assert_graded(state, "mallory", dict(POINTS, test_mean=0))
    assert "nobody" not in state
    assert any("alice/tiny.ipynb" in n for n in state["mallory"]["notes"]), state["mallory"]["notes"]


def test_unicode_and_nested_folder_names_are_graded(export):
    """Defence: the intake's id rule (NFC Unicode letters; a nested folder is never an id). Before:
    'José' or 'My Drive' stopped the whole batch with exit 2."""
    course, _, state, _ = export
    assert_graded(state, "José", POINTS)
    assert_graded(state, "carol", POINTS)
    assert any("My Drive/notes.txt" in n for n in state["carol"]["notes"]), state["carol"]["notes"]
    assert course.path("submitted", "carol", ASSIGNMENT, "tiny.ipynb").read_bytes() == \
        _nb(solved(course, ASSIGNMENT, NOTEBOOK)), "carol's draft in My Drive/ must not replace her notebook"
    assert_graded(state, "dora", POINTS)   # her only notebook, in a folder of her own
    assert_failed(state, "eve*", "cannot read a student id")
    assert not course.path("submitted", "eve*").exists()


def test_symlinked_students_get_a_row_with_the_reason(export):
    """Defence: the intake (links are never followed). Before: neither had a row."""
    course, _, state, _ = export
    assert_failed(state, "frank", "symbolic link")
    assert_failed(state, "gina", "symbolic link")
    assert not course.path("submitted", "frank").exists() and not course.path("submitted", "gina").exists()


def test_a_huge_extra_file_is_refused_without_reading_it(export):
    """Defence: the intake's size caps, checked from the file's size before it is read. Before: the
    2 GB file was read into memory (batch peak 3-4.7 GB) and written to submitted/, autograded/
    and feedback/."""
    course, result, state, _ = export
    assert_failed(state, "hugo", "data.bin", f"{subs.MAX_FILE_MB} MB")
    assert result["peak_mb"] < PEAK_MB, f"the batch's biggest process peaked at {result['peak_mb']:.0f} MB"
    for step in ("submitted", "autograded", "feedback"):
        for path in course.path(step).rglob("*"):
            if path.is_file():
                assert path.stat().st_size <= subs.MAX_FILE_MB * 2**20, f"{path} is {path.stat().st_size} bytes"


def test_an_output_flood_is_capped_in_bytes(export):
    """Defence: SandboxedExecute's byte caps (as output arrives) and the bounded kernel log. Before:
    a 268 MB autograded notebook, a 268 MB feedback file and 256 MB logs."""
    course, _, state, _ = export
    assert_graded(state, "ivan", POINTS)
    notebook = course.path("autograded", "ivan", ASSIGNMENT, f"{NOTEBOOK}.ipynb")
    feedback = course.path("feedback", "ivan", ASSIGNMENT, f"{NOTEBOOK}.html")
    for path in (notebook, feedback):
        assert path.stat().st_size < 4 * 2**20, f"{path} is {path.stat().st_size} bytes"
        assert "output truncated" in path.read_text(), f"no truncation note in {path}"
    for log in course.path("grades", ASSIGNMENT, "logs").glob("ivan*.log"):
        assert log.stat().st_size < 2**20, f"{log} is {log.stat().st_size} bytes"


@pytest.fixture(scope="module")
def in_place(tmp_path_factory):
    ensure_debian_packages(["bubblewrap"], ["bwrap"])
    root = tmp_path_factory.mktemp("inplace")
    course = tiny_course(root)
    release = _nb(course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb"))
    victim = _put(course.path("submitted", "alice", ASSIGNMENT, "tiny.ipynb"), _nb(solved(course, ASSIGNMENT, NOTEBOOK)))
    own = course.path("submitted", "mallory", ASSIGNMENT)
    _put(own / "tiny.ipynb", _nb(solved(course, ASSIGNMENT, NOTEBOOK, WRONG_MEAN)))
    _put(own / "alice" / ASSIGNMENT / "tiny.ipynb", release)    # nbgrader's layout, one level down
    _put(own / "nobody" / ASSIGNMENT / "tiny.ipynb", release)
    _put(course.path("submitted", "bob", "ps_other", "other.ipynb"), release)   # handed in another assignment only
    before = victim.read_bytes(), victim.stat()
    settings = Settings(cell_timeout=60, budget=300, workers=2, limits=Limits(memory_mb=1536, processes=40, cpu_seconds=30))
    rows = grade_batch(root, ASSIGNMENT, root / "submitted", settings, progress=False)
    return course, {r["student"]: r for r in rows}, victim, before


def test_grading_submitted_in_place_leaves_other_students_alone(in_place):
    """Defence: the intake (nbgrader's layout only at <student>/<assignment>/) and `_store` (in place,
    nothing is rewritten). Before: mallory's copy replaced alice's collected notebook on disk."""
    course, rows, victim, (data, st) = in_place
    assert_graded(rows, "alice", POINTS)
    assert_graded(rows, "mallory", dict(POINTS, test_mean=0))
    assert "nobody" not in rows and not course.path("submitted", "nobody").exists()
    assert "bob" not in rows and not course.path("submitted", "bob", ASSIGNMENT).exists(), \
        "a student who handed in another assignment is not in this one"
    now = victim.stat()
    assert victim.read_bytes() == data and (now.st_ino, now.st_mtime_ns) == (st.st_ino, st.st_mtime_ns), \
        "alice's collected notebook was rewritten"


# --- the intake alone: no kernel, no root ---------------------------------------------------------

def _zip(path: Path, entries: dict) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            if isinstance(data, zipfile.ZipInfo):
                zf.writestr(data, b"../../etc/passwd")
            else:
                zf.writestr(name, data)
    return path


def test_zip_intake_one_student_per_entry_and_links_refused(tmp_path):
    """Defence: the intake, on a zip: nested folders stay the student's, NFD names become NFC ids,
    a link entry is refused with its own row."""
    link = zipfile.ZipInfo("lee/tiny.ipynb")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    nfd = unicodedata.normalize("NFD", "José")
    export = _zip(tmp_path / "export.zip", {
        "alice/tiny.ipynb": b"honest", "mallory/tiny.ipynb": b"own", "mallory/alice/tiny.ipynb": b"evil",
        "mallory/nobody/tiny.ipynb": b"evil", f"{nfd}/tiny.ipynb": b"jose", "lee": link,
        "kim/tiny.ipynb": b"kim", "kim/data.csv": b"1,2", "bad name!/tiny.ipynb": b"x", "../up_1_tiny.ipynb": b"x",
        "__MACOSX/alice/._tiny.ipynb": b"junk"})
    taken = subs.intake(export, ["tiny"])
    assert {s: sub.files for s, sub in taken.students.items()} == {
        "alice": {"tiny.ipynb": b"honest"}, "mallory": {"tiny.ipynb": b"own"}, "José": {"tiny.ipynb": b"jose"},
        "kim": {"tiny.ipynb": b"kim"}}
    assert unicodedata.is_normalized("NFC", next(s for s in taken.students if s.startswith("Jos")))
    assert "symbolic link" in taken.rejected["lee"], taken.rejected
    assert "cannot read a student id" in taken.rejected["bad name!"]
    assert any("cannot read a student id" in why for name, why in taken.rejected.items() if "up_1" in name)
    assert any("data.csv" in n for n in taken.students["kim"].notes)
    with pytest.raises(ValueError, match="cannot read a student id"):
        subs.collect(export, ["tiny"])   # the all-or-nothing form still refuses the whole export


def test_zip_intake_caps_sizes_before_and_while_reading(tmp_path):
    """Defence: the intake's caps: a declared size over the cap is refused unread; a header that lies
    about the size is caught by the bounded read (a zip bomb never inflates in memory)."""
    big = b"\0" * (3 * 2**20)
    export = _zip(tmp_path / "bomb.zip", {"amy/tiny.ipynb": big, "ben/tiny.ipynb": b"ok", "cat/tiny.ipynb": big})
    raw = bytearray(export.read_bytes())
    with zipfile.ZipFile(export) as zf:
        info = zf.getinfo("cat/tiny.ipynb")
    for at in (info.header_offset + 22, raw.rindex(b"cat/tiny.ipynb") - 46 + 24):   # local and central sizes
        raw[at:at + 4] = (100).to_bytes(4, "little")
    export.write_bytes(bytes(raw))
    taken = subs.intake(export, ["tiny"], max_file_mb=1)
    assert taken.students["ben"].files == {"tiny.ipynb": b"ok"}
    assert "1 MB" in taken.rejected["amy"], taken.rejected
    assert "cat" in taken.rejected and "cat" not in taken.students, taken.rejected


def test_folder_intake_caps_total_size_and_skips_other_files(tmp_path):
    """Defence: the intake's caps on a folder: sizes come from stat (a sparse file is never read)."""
    _put(tmp_path / "amy" / "tiny.ipynb", b"a")
    with open(tmp_path / "amy" / "huge.bin", "wb") as f:
        f.truncate(8 * 2**30)
    _put(tmp_path / "ben" / "tiny.ipynb", b"b")
    _put(tmp_path / "ben" / "notes.txt", b"n")
    _put(tmp_path / "cat" / "tiny.ipynb", b"c" * 2**20)
    _put(tmp_path / "cat" / "other.ipynb", b"c" * 2**20)
    (tmp_path / "readme.txt").write_text("not a student")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    taken = subs.intake(tmp_path, ["tiny"], max_file_mb=2, max_submission_mb=1.5)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024, "the sparse file was read"
    assert "huge.bin" in taken.rejected["amy"]
    assert taken.students["ben"].files == {"tiny.ipynb": b"b"}
    assert any("notes.txt" in n for n in taken.students["ben"].notes)
    assert "1.5 MB" in taken.rejected["cat"], taken.rejected
    assert "readme.txt" in taken.rejected


@pytest.mark.parametrize("name", ["José", "Zoë.Ng", "李雷", "a.b-c+d@uni.edu", "john_doe", "x" * 100])
def test_student_ids_accept_unicode(name):
    assert subs.student_id(unicodedata.normalize("NFD", name)) == name


@pytest.mark.parametrize("name", ["", ".hidden", "..", "-rf", "a/b", "a\\b", "My Drive", "a*", "a?b", "[ab]",
                                  "a,b", "tab\tname", "nul\0", "bidi\u202eevil", "x" * 101, "\udcff"])
def test_student_ids_refuse_what_nbgrader_or_the_file_system_cannot_take(name):
    with pytest.raises(ValueError, match="cannot read a student id"):
        subs.student_id(name)


# --- the output caps alone: SandboxedExecute fed IOPub messages, no kernel ------------------------

def _msg(kind, **content):
    return {"msg_type": kind, "header": {"msg_type": kind}, "parent_header": {"msg_id": "m"}, "content": content}


def _executor(**caps):
    from dlcourse.grading.sandbox import SandboxedExecute
    ex = SandboxedExecute(**caps)
    ex.nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x"), nbformat.v4.new_code_cell("y")])
    ex.reset_execution_trackers()
    ex.clear_before_next_output = False   # what nbclient sets as a cell starts
    return ex


def _feed(ex, index, messages):
    cell = ex.nb.cells[index]
    for m in messages:
        ex.process_message(m, cell, index)
    return cell


def test_output_cap_is_a_no_op_below_the_limits():
    """Defence: the output caps keep output that fits exactly as nbclient would."""
    from nbclient import NotebookClient
    messages = [_msg("stream", name="stdout", text="a" * 1000), _msg("stream", name="stderr", text="UserWarning: w\n"),
                _msg("execute_result", data={"text/plain": "0.5"}, metadata={}, execution_count=1),
                _msg("error", ename="AssertionError", evalue="no", traceback=["tb"] * 3)]
    plain = NotebookClient(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x")]))
    plain.reset_execution_trackers()
    plain.clear_before_next_output = False
    for m in json.loads(json.dumps(messages)):
        plain.process_message(m, plain.nb.cells[0], 0)
    capped = _feed(_executor(max_cell_output_bytes=2000), 0, json.loads(json.dumps(messages)))
    assert capped.outputs == plain.nb.cells[0].outputs


def test_output_cap_keeps_what_scores_and_notes_the_rest():
    """Defence: the output caps, per cell and per notebook: stdout past the cap is dropped with a
    visible note; an error (what nbgrader scores by) is kept, shortened."""
    ex = _executor(max_cell_output_bytes=10_000, max_notebook_output_bytes=15_000)
    flood = [_msg("stream", name="stdout", text="x" * 4000 + "\n") for _ in range(10)]
    cell = _feed(ex, 0, flood + [_msg("error", ename="AssertionError", evalue="wrong", traceback=["t" * 50_000] * 3)])
    kept = sum(len(o.get("text", "")) for o in cell.outputs if o.output_type == "stream")
    assert kept == 10_000, kept
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "AssertionError" and len(json.dumps(errors[0])) < 5000
    notes = [o for o in cell.outputs if "output truncated" in json.dumps(o)]
    assert len(notes) == 1 and "bytes not kept" in json.dumps(notes[0]), cell.outputs
    long_name = {"ename": "E" * 2000, "evalue": "v" * 10**6, "traceback": ["t"] * 10**5}
    cell = _feed(ex, 0, [_msg("error", **long_name)])
    ex.on_cell_executed(cell=cell, cell_index=0, execute_reply={"content": {"status": "error", **long_name}})
    assert len(json.dumps(cell.outputs)) < 20_000, "the shell reply's copy of the error must be shortened too"
    second = _feed(ex, 1, flood)   # the notebook's cap: 5,000 bytes were left
    assert sum(len(o.get("text", "")) for o in second.outputs if o.output_type == "stream") == 5000


def test_output_cap_counts_widget_state_and_display_updates():
    """Defence: the output caps on what a notebook stores besides outputs: an update of a display
    shown 100 times, and a widget's state (the notebook's metadata), count what they would add."""
    ex = _executor(max_cell_output_bytes=10_000, max_notebook_output_bytes=20_000)
    shown = [_msg("display_data", data={"text/plain": "a"}, metadata={}, transient={"display_id": "d"})] * 100
    update = _msg("update_display_data", data={"text/plain": "y" * 5000}, metadata={}, transient={"display_id": "d"})
    cell = _feed(ex, 0, json.loads(json.dumps(shown + [update])))
    assert [o.data["text/plain"] for o in cell.outputs if o.output_type == "display_data"][:100] == ["a"] * 100
    state = {"_model_name": "TextModel", "_model_module": "@jupyter-widgets/controls", "value": "small"}
    widget = [_msg("comm_open", comm_id="w", target_name="jupyter.widget", data={"state": state, "buffer_paths": []}),
              _msg("comm_msg", comm_id="w", data={"method": "update", "state": {"value": "x" * 50_000}, "buffer_paths": []})]
    cell = _feed(ex, 1, widget)
    assert ex.widget_state["w"]["value"] == "small", "the 50 kB update must be dropped"
    _feed(ex, 1, [_msg("comm_msg", comm_id="w", data={"method": "update", "state": {"value": "v2"}, "buffer_paths": []})])
    assert ex.widget_state["w"]["value"] == "v2", "a small update is kept"
    assert any("output truncated" in json.dumps(o) for o in cell.outputs), cell.outputs
