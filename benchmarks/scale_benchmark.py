"""The grader's own cost for a class of thousands: is it linear in the class?

    .venv/bin/python benchmarks/scale_benchmark.py --count 2000

What it measures, and what not: `grade_batch` on `--count` submissions of the tiny test assignment
(tests/fixtures/tiny_assignment.py; two thirds correct, the rest with a wrong `add`) with the
grading worker replaced by a stub. The stub runs no kernel: for each student it writes what an
autograde leaves behind, the submission and its auto scores in the gradebook (nbgrader's
Gradebook.add_submission) and the notebook in autograded/, and reports success. Everything else
is the batch's own code, unchanged: registering the students, planning (store, validate and scan
each notebook), the state log, the finisher (scores read back, the row saved), grades.csv and the
report (which reads every autograded notebook: mistakes, similarity). Kernel time per submission
is what grade_benchmark.py measures; it does not grow with the class. The course lies on a tmpfs
(/dev/shm) unless --dir says otherwise: the gradebook's commits then wait for no disk.

Prints, per block of 100 students in the order they were handled: the planning time per student,
the finisher's time per student (of which the state log's save), and the batch's resident memory
after the block; then the time per row of grades.csv and the report written for the first 100,
500, 1000 ... rows; then a batch interrupted near the end (Ctrl-C after all but 10) and the same
command again: how many students the second run grades and how long it takes.
Not a test: the numbers depend on the machine and on its load.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK  # noqa: E402
from nbgrader_harness import solved, tiny_course  # noqa: E402

from dlcourse.grading import batch, plan, record, report  # noqa: E402
from dlcourse.grading.batch import Outcome, Settings, grade_batch  # noqa: E402
from dlcourse.grading.state import StateLog  # noqa: E402

WRONG = {"add": "def add(a, b):\n    return a - b"}
BLOCK = 100


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Probe:
    """Times of the batch's steps, student by student (what the wrappers below record)."""

    def __init__(self):
        self.plan, self.finish, self.save, self.rss, self.stub = [], [], [], [], []
        self._last_store = None
        self.graded = 0
        self.stop_after = None   # Ctrl-C once this many students were graded (None: never)


def install(probe: Probe) -> None:
    """Wrap the batch's steps to time them; the worker becomes StubRunner."""
    store, finish_call, save = plan.store, record.Finisher.__call__, StateLog.save

    def timed_store(*args, **kwargs):   # called once per student, at the end of its planning
        result = store(*args, **kwargs)
        now = time.perf_counter()
        if probe._last_store is not None:
            probe.plan.append(now - probe._last_store)
        probe._last_store = now
        return result

    def timed_finish(self, job, outcome, worker="local"):
        begin = time.perf_counter()
        finish_call(self, job, outcome, worker)
        probe.finish.append(time.perf_counter() - begin)
        if len(probe.finish) % BLOCK == 0:
            probe.rss.append(rss_mb())

    def timed_save(self, student, row):
        begin = time.perf_counter()
        save(self, student, row)
        probe.save.append(time.perf_counter() - begin)

    class StubRunner:
        """What Runner hands the finisher, with no kernel: the gradebook as an autograde leaves it."""

        def __init__(self, root, assignment, settings, url, logs, done, *args, **kwargs):
            self.root, self.assignment, self.url, self.done = root, assignment, url, done

        def run(self, todo, stop):
            from nbgrader.api import Gradebook
            with Gradebook(self.url, "dlcourse") as gb:
                for job in todo:
                    if probe.stop_after is not None and probe.graded >= probe.stop_after:
                        raise KeyboardInterrupt("stopped by signal 2")
                    begin = time.perf_counter()
                    src = self.root / "submitted" / job.student / self.assignment / f"{NOTEBOOK}.ipynb"
                    wrong = "return a - b" in src.read_text()
                    sub = gb.update_or_create_submission(self.assignment, job.student)
                    for nb in sub.notebooks:
                        for g in nb.grades:
                            if g.name.startswith("test_"):   # the written answer awaits a person
                                g.auto_score = 0.0 if wrong and g.name == "test_add" else g.max_score
                    gb.db.commit()
                    dst = self.root / "autograded" / job.student / self.assignment / f"{NOTEBOOK}.ipynb"
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)
                    probe.graded += 1
                    probe.stub.append(time.perf_counter() - begin)
                    self.done(job, Outcome(True, seconds=0.0))

    plan.store, record.Finisher.__call__, StateLog.save = timed_store, timed_finish, timed_save
    batch.Runner = StubRunner


def per_block(values: list, scale: float) -> list[float]:
    return [statistics.mean(values[i:i + BLOCK]) * scale for i in range(0, len(values), BLOCK) if values[i:i + BLOCK]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--dir", default="/dev/shm" if Path("/dev/shm").is_dir() else None,
                   help="where the course is made (default /dev/shm, a tmpfs: SQLite's commits wait for no disk, "
                        "so the numbers show the grader's cost, not the disk's)")
    args = p.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    probe = Probe()
    install(probe)
    settings = Settings(workers=1, sandbox=False, feedback=False, fork_kernels=False, timeout_factor=0)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="scale-bench-", dir=args.dir) as tmp:
        tmp = Path(tmp)
        course = tiny_course(tmp / "course")
        folder = tmp / "subs"
        right, wrong = solved(course, ASSIGNMENT, NOTEBOOK), solved(course, ASSIGNMENT, NOTEBOOK, WRONG)
        for i in range(args.count):
            (folder / f"s{i:05d}").mkdir(parents=True)
            nbformat.write(wrong if i % 3 == 2 else right, folder / f"s{i:05d}" / f"{NOTEBOOK}.ipynb")

        begin = time.perf_counter()
        rows = grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)
        whole = time.perf_counter() - begin
        stub = sum(probe.stub)
        print(f"{len(rows)} students in {whole:.1f} s, of which {stub:.1f} s the stub's gradebook writes (a worker's "
              f"part); the batch's own: {(whole - stub) / len(rows) * 1000:.1f} ms a student (kernels excluded); "
              f"scores: {sum(r.get('score') == 5 for r in rows)} full, {sum(r.get('score') == 3 for r in rows)} "
              f"without add's points, {sum(r['status'] != 'graded' for r in rows)} not graded")
        plan, fin, save = per_block(probe.plan, 1e3), per_block(probe.finish, 1e3), per_block(probe.save, 1e6)
        stubs = per_block(probe.stub, 1e3)
        print(f"per student, by block of {BLOCK} (in the order handled):")
        print(f"  {'block':>11s} {'plan ms':>8s} {'finish ms':>9s} {'of it save us':>13s} {'RSS MB':>7s} {'stub ms':>8s}")
        for b in range(len(fin)):
            print(f"  {b * BLOCK + 1:5d}-{(b + 1) * BLOCK:<5d} {plan[b] if b < len(plan) else float('nan'):8.2f} "
                  f"{fin[b]:9.2f} {save[b] if b < len(save) else float('nan'):13.1f} "
                  f"{probe.rss[b] if b < len(probe.rss) else float('nan'):7.1f} {stubs[b]:8.2f}")

        maxima = {"test_add": 2.0, "test_mean": 3.0, "written": 1.0}
        release = course.root / "release" / ASSIGNMENT
        print("grades.csv and the report, per row:")
        for k in sorted({min(args.count, n) for n in (100, 500, 1000, 2000, args.count)}):
            out = tmp / f"report-{k}"
            (out / "logs").mkdir(parents=True)
            begin = time.perf_counter()
            report.write_outputs(out, ASSIGNMENT, [dict(r) for r in rows[:k]], maxima,
                                 autograded=course.root / "autograded", release=release)
            took = time.perf_counter() - begin
            print(f"  {k:5d} rows: {took:6.2f} s = {took / k * 1000:.2f} ms per row")

        # a batch stopped near the end, then run again
        again = tiny_course(tmp / "again")
        probe.graded, probe.stop_after = 0, args.count - 10
        try:
            grade_batch(again.root, ASSIGNMENT, folder, settings, progress=False)
        except KeyboardInterrupt:
            pass
        state = again.root / "grades" / ASSIGNMENT / "state.json"
        saved = len(StateLog(state))
        probe.graded, probe.stop_after = 0, None
        begin = time.perf_counter()
        rows = grade_batch(again.root, ASSIGNMENT, folder, settings, progress=False)
        print(f"interrupted after {saved} of {args.count}; the same command again graded {probe.graded} "
              f"students in {time.perf_counter() - begin:.1f} s and wrote {len(rows)} rows")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
