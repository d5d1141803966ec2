"""The batch's state (lib/dlcourse/grading/state.py): a row is appended, never the whole file
rewritten; a batch stopped part-way resumes from what was appended, grading only the rest.

No kernel runs here: the planning step (`plan.plan`: store, validate, skip what is final) reads
the state as a resumed batch does.
"""
import json

import nbformat

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK, notebook, write_source

from dlcourse.grading import submissions as subs
from dlcourse.grading.plan import plan
from dlcourse.grading.state import StateLog, read_state


def test_a_saved_row_is_one_line_appended_and_state_json_is_not_rewritten(tmp_path):
    path = tmp_path / "state.json"
    state = StateLog(path)
    state.save("s0", {"status": "graded", "score": 0.0})
    state.compact()
    state = StateLog(path)   # a resumed batch: loading compacts once
    before = path.stat()
    sizes = []
    for i in range(1, 200):
        state.save(f"s{i}", {"status": "graded", "score": float(i)})
        sizes.append(state.log_path.stat().st_size)
    after = path.stat()
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns), \
        "state.json must not be touched while rows are saved"
    steps = [b - a for a, b in zip(sizes, sizes[1:])]
    assert max(steps) < 100, f"each save appends one short line, not the state so far: {steps[-5:]}"
    assert len(state.log_path.read_text().splitlines()) == 199
    assert read_state(path) == {f"s{i}": {"status": "graded", "score": float(i)} for i in range(200)}
    state.compact()
    assert not state.log_path.exists() and len(json.loads(path.read_text())) == 200


def test_a_line_cut_short_by_a_crash_is_ignored_and_a_later_row_wins(tmp_path):
    path = tmp_path / "state.json"
    state = StateLog(path)
    state.save("a", {"status": "failed", "final": False})
    state.save("a", {"status": "graded", "score": 1.0})
    state.save("b", {"status": "graded", "score": 2.0})
    with open(state.log_path, "a") as f:   # the crash came in the middle of c's line
        f.write('{"row": {"status": "gra')
    assert read_state(path) == {"a": {"status": "graded", "score": 1.0}, "b": {"status": "graded", "score": 2.0}}
    resumed = StateLog(path)   # loading compacts: the torn line is gone, the rows stay
    assert dict(resumed) == read_state(path) and not resumed.log_path.exists()
    assert json.loads(path.read_text()) == dict(resumed)


def test_a_batch_stopped_part_way_resumes_with_the_students_not_yet_saved(tmp_path):
    root, folder = tmp_path / "course", tmp_path / "subs"
    write_source(root)
    source = {NOTEBOOK: json.loads(nbformat.writes(notebook()))}
    students = [f"s{i}" for i in range(6)]
    for s in students:
        (folder / s).mkdir(parents=True)
        nbformat.write(notebook(), folder / s / f"{NOTEBOOK}.ipynb")
    path = tmp_path / "grades" / "state.json"
    path.parent.mkdir()

    def replan():
        state = StateLog(path)
        taken = subs.intake(folder, [NOTEBOOK], ASSIGNMENT)
        return state, plan(root, ASSIGNMENT, taken, [NOTEBOOK], source, state, state.save)

    state, todo = replan()
    assert [j.student for j in todo] == students
    for job in todo[:4]:   # four graded (one not final: the grader's own trouble), then the batch is killed
        row = dict(job.row, status="graded", score=5.0)
        if job.student == "s3":
            row.update(status="failed", final=False)
        state.save(job.student, row)
    # the batch "died" here, before it compacted: only the log holds the rows
    assert not path.exists() and len(state.log_path.read_text().splitlines()) == 4

    state, todo = replan()
    assert [j.student for j in todo] == ["s3", "s4", "s5"], "only what is not final is graded again"
    assert {s: state[s]["score"] for s in ("s0", "s1", "s2")} == dict.fromkeys(("s0", "s1", "s2"), 5.0)
    (folder / "s1" / f"{NOTEBOOK}.ipynb").write_text(
        nbformat.writes(notebook()).replace("return a + b", "return a - b"))
    _, todo = replan()
    assert [j.student for j in todo] == ["s1", "s3", "s4", "s5"], "a changed submission is graded again"
