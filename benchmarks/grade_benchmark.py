"""Benchmark the batch grader: a synthetic class of ps_convolution submissions at 1 and N workers.

    .venv/bin/python benchmarks/grade_benchmark.py --count 100 --workers 2

Mixes correct, wrong (flipped kernel), untouched and hostile (endless loop, os._exit) submissions,
grades them twice in a fresh temporary course (1 worker, then N) and prints submissions per
minute and the speed-up. Not a test: the numbers depend on the machine.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from nbgrader_harness import make_course, solved  # noqa: E402

from dlcourse.grading.batch import Settings, grade_batch  # noqa: E402

ASSIGNMENT, NOTEBOOK = "ps_convolution", "convolution"
VARIANTS = {
    "correct": None,
    "flipped": {"corr1d": "def corr1d(x, k):\n    k = torch.flip(k, dims=(0,))\n"
                          "    return torch.stack([(x[i:i + len(k)] * k).sum() for i in range(len(x) - len(k) + 1)])"},
    "release": "release",
    "loop": {"max_pool2d": "def max_pool2d(x, kernel_size, stride=None):\n    while True:\n        pass"},
    "exit": {"corr1d": "import os\nos._exit(1)"},
}
MIX = ["correct"] * 6 + ["flipped"] * 2 + ["release", "loop"]  # every 25th: os._exit


def run(count: int, workers: int, cell_timeout: int) -> float:
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "course").mkdir()
        course = make_course(tmp / "course", [ASSIGNMENT])
        folder = tmp / "subs"
        for i in range(count):
            kind = MIX[i % len(MIX)] if i % 25 else "exit"
            nb = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb") if VARIANTS[kind] == "release" \
                else solved(course, ASSIGNMENT, NOTEBOOK, VARIANTS[kind])
            (folder / f"s{i:03d}").mkdir(parents=True)
            nbformat.write(nb, folder / f"s{i:03d}" / f"{NOTEBOOK}.ipynb")
        settings = Settings(cell_timeout=cell_timeout, budget=120, workers=workers, feedback=True)
        start = time.monotonic()
        rows = grade_batch(course.root, ASSIGNMENT, folder, settings)
        elapsed = time.monotonic() - start
        counts = {s: sum(r["status"] == s for r in rows) for s in ("graded", "failed")}
        print(f"{workers} worker(s): {count} submissions in {elapsed:.1f} s = {count / elapsed * 60:.1f} per minute {counts}")
        return elapsed


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--cell-timeout", type=int, default=10)
    args = p.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    one = run(args.count, 1, args.cell_timeout)
    many = run(args.count, args.workers, args.cell_timeout)
    print(f"speed-up with {args.workers} workers: {one / many:.2f}x")


if __name__ == "__main__":
    main()
