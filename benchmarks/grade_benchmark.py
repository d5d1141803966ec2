"""Benchmark the batch grader: a synthetic class of ps_convolution submissions at 1 and N workers.

    .venv/bin/python benchmarks/grade_benchmark.py --count 100 --workers 2

Mixes correct, wrong (flipped kernel), untouched and hostile (endless loop, os._exit, an IPython
AST transformer that deletes asserts) submissions, grades them twice in a fresh temporary course
(1 worker, then N) and prints submissions per minute and the speed-up. It also runs the model
answer plainly (nbclient, no grader) and prints the grader's overhead per well-behaved
submission: its mean grading time in the 1-worker run minus that plain execution time.
Not a test: the numbers depend on the machine.
"""
import statistics
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
    "noassert": {"corr1d": "import ast\nclass NoAssert(ast.NodeTransformer):\n"
                           "    def visit_Assert(self, node):\n        return ast.Pass()\n"
                           "get_ipython().ast_transformers.append(NoAssert())\n"
                           "def corr1d(x, k):\n    return x[:len(x) - len(k) + 1]"},
}
MIX = ["correct"] * 6 + ["flipped", "noassert", "release", "loop"]  # every 25th: os._exit


def kind_of(i: int) -> str:
    return MIX[i % len(MIX)] if i % 25 else "exit"


def plain_seconds(course, repeats: int = 3) -> float:
    """Median wall time of running the model answer top to bottom with nbclient (no grader)."""
    from nbclient import NotebookClient
    times = []
    for _ in range(repeats):
        nb = solved(course, ASSIGNMENT, NOTEBOOK)
        start = time.monotonic()
        NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(course.root)}}).execute()
        times.append(time.monotonic() - start)
    return statistics.median(times)


def run(count: int, workers: int, cell_timeout: int) -> tuple[float, float, float]:
    """(elapsed seconds, mean grading seconds of a correct submission, plain execution seconds)"""
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "course").mkdir()
        course = make_course(tmp / "course", [ASSIGNMENT])
        folder = tmp / "subs"
        for i in range(count):
            kind = kind_of(i)
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
        for kind in VARIANTS:
            mine = [r for r in rows if kind_of(int(r["student"][1:])) == kind]
            scores = [r["score"] for r in mine if r["status"] != "failed"]
            print(f"  {kind:9s} {len(mine):3d} submissions, {len(mine) - len(scores)} failed, "
                  f"mean score {statistics.mean(scores) if scores else float('nan'):.1f} of {rows[0].get('max_score') or 13:g}")
        correct = [r["seconds"] for r in rows if kind_of(int(r["student"][1:])) == "correct"]
        plain = plain_seconds(course) if workers == 1 else float("nan")
        return elapsed, statistics.mean(correct), plain


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--cell-timeout", type=int, default=10)
    args = p.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    one, graded, plain = run(args.count, 1, args.cell_timeout)
    many, _, _ = run(args.count, args.workers, args.cell_timeout)
    print(f"speed-up with {args.workers} workers: {one / many:.2f}x")
    print(f"correct submission: {graded:.2f} s graded (1 worker, feedback included) vs {plain:.2f} s plain "
          f"execution = {graded - plain:.2f} s overhead")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
