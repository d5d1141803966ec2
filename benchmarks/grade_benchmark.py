"""Benchmark the batch grader against stock nbgrader on the same ps_convolution submissions, in one run.

    .venv/bin/python benchmarks/grade_benchmark.py --count 12

Stock nbgrader: `nbgrader autograde` then `nbgrader generate_feedback` (sequential, no sandbox) in
a fresh temporary course. Then `make grade`'s engine (`grade_batch` with the CLI's defaults:
sandbox, every defence, feedback) on the same files in another fresh course. Prints both times,
submissions per minute, the ratio, whether the scores agree, where a submission's time goes (kernel
start, imports, execution, nbgrader's bookkeeping, feedback; means over the graded submissions)
and the peak memory of a grading worker and of its kernel. As root the kernels are forked from
the batch's kernel template, as `make grade` does (`--no-fork-kernels`: fresh ones): the first
ones wait for its imports (in their kernel start), the median shows a submission's time once it
is ready. Also compares every feedback file with stock nbgrader's, byte for byte. `--mix` grades a mixed class instead (correct, wrong, untouched, hostile: endless loop,
os._exit, an AST transformer deleting asserts).
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
STAGES = ("kernel_start", "imports", "execution", "bookkeeping", "feedback")


def kind_of(i: int, mix: bool) -> str:
    if not mix:
        return "correct"
    return MIX[i % len(MIX)] if i % 25 else "exit"


def fresh_course(path: Path):
    path.mkdir(parents=True)
    return make_course(path, [ASSIGNMENT])


def write_class(course, folder: Path, count: int, mix: bool) -> None:
    for i in range(count):
        kind = kind_of(i, mix)
        nb = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb") if VARIANTS[kind] == "release" \
            else solved(course, ASSIGNMENT, NOTEBOOK, VARIANTS[kind])
        (folder / f"s{i:03d}").mkdir(parents=True)
        nbformat.write(nb, folder / f"s{i:03d}" / f"{NOTEBOOK}.ipynb")


def gradebook_scores(root: Path, students) -> dict:
    from nbgrader.api import Gradebook, MissingEntry
    out = {}
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "dlcourse") as gb:
        for s in students:
            try:
                out[s] = gb.find_submission(ASSIGNMENT, s).score
            except MissingEntry:
                out[s] = None
    return out


def stock(tmp: Path, folder: Path, cell_timeout: int) -> tuple[float, dict, Path]:
    """(seconds, {student: score}, course folder) of stock nbgrader: autograde, then generate_feedback."""
    course = fresh_course(tmp / "stock")
    shutil.copytree(folder, course.path("submitted"), dirs_exist_ok=True)
    for student in os.listdir(folder):  # nbgrader's layout: submitted/<student>/<assignment>/<notebook>.ipynb
        src = course.path("submitted", student, f"{NOTEBOOK}.ipynb")
        dst = course.path("submitted", student, ASSIGNMENT, f"{NOTEBOOK}.ipynb")
        dst.parent.mkdir(parents=True)
        src.rename(dst)
    start = time.monotonic()
    course.autograde(ASSIGNMENT, cell_timeout=cell_timeout)
    course.feedback(ASSIGNMENT)
    elapsed = time.monotonic() - start
    return elapsed, gradebook_scores(course.root, os.listdir(folder)), course.root


def ours(tmp: Path, folder: Path, settings: Settings) -> tuple[float, list[dict], Path]:
    course = fresh_course(tmp / "ours")
    start = time.monotonic()
    rows = grade_batch(course.root, ASSIGNMENT, folder, settings, progress=False)
    return time.monotonic() - start, rows, course.root


def feedback_differs(stock_root: Path, our_root: Path, students) -> dict:
    """{student: what differs} where the feedback HTML is not byte for byte the same in both
    courses: the cells (grade id, else index) whose prompt number or outputs differ in the
    autograded notebooks, or 'missing'."""
    differ = {}
    for s in sorted(students):
        a, b = (root / "feedback" / s / ASSIGNMENT / f"{NOTEBOOK}.html" for root in (stock_root, our_root))
        if a.exists() and b.exists() and a.read_bytes() == b.read_bytes():
            continue
        if not (a.exists() and b.exists()):
            differ[s] = ["(no feedback file)"]
            continue
        cells = [nbformat.read(root / "autograded" / s / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4).cells
                 for root in (stock_root, our_root)]
        differ[s] = [c.metadata.get("nbgrader", {}).get("grade_id", str(i)) for i, (c, d) in enumerate(zip(*cells))
                     if (c.get("execution_count"), c.get("outputs")) != (d.get("execution_count"), d.get("outputs"))]
    return differ


def stage_table(rows: list[dict]) -> str:
    staged = [r["stages"] for r in rows if r.get("stages")]
    if not staged:
        return "no stage times (no submission was graded)"
    lines = [f"per graded submission (mean of {len(staged)}, seconds of wall time in its worker):"]
    for s in STAGES:
        lines.append(f"  {s:13s} {statistics.mean(x.get(s, 0.0) for x in staged):6.2f}")
    lines.append(f"  {'total':13s} {statistics.mean(sum(x.get(s, 0.0) for s in STAGES) for x in staged):6.2f}"
                 f"   (row 'seconds', worker start included: {statistics.mean(r['seconds'] for r in rows if r.get('stages')):.2f})")
    lines.append(f"  median row 'seconds' {statistics.median(r['seconds'] for r in rows if r.get('stages')):.2f}")
    lines.append(f"peak memory: grading worker {max(x['worker_mb'] for x in staged):.0f} MB, "
                 f"its kernel {max(x['kernel_mb'] for x in staged):.0f} MB (max over submissions)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=12)
    p.add_argument("--workers", type=int, default=Settings().workers, help="default: the CLI's")
    p.add_argument("--cell-timeout", type=int, default=30)
    p.add_argument("--mix", action="store_true", help="a mixed class (wrong and hostile submissions too)")
    p.add_argument("--fork-kernels", action=argparse.BooleanOptionalAction, default=Settings().fork_kernels,
                   help="fork the kernels from the kernel template, as root (default: the CLI's)")
    args = p.parse_args()
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as tmp:
        tmp = Path(tmp)
        seed = fresh_course(tmp / "seed")
        folder = tmp / "subs"
        write_class(seed, folder, args.count, args.mix)
        t_stock, stock_scores, stock_root = stock(tmp, folder, args.cell_timeout)
        settings = Settings(cell_timeout=args.cell_timeout, workers=args.workers, fork_kernels=args.fork_kernels)
        t_ours, rows, our_root = ours(tmp, folder, settings)
        feedback = feedback_differs(stock_root, our_root, os.listdir(folder))
    n = args.count
    print(f"stock nbgrader (autograde + generate_feedback, sequential, no sandbox): {t_stock:.1f} s = "
          f"{n / t_stock * 60:.1f} per minute ({t_stock / n:.2f} s per submission)")
    kernels = "kernels forked from the template" if args.fork_kernels and os.geteuid() == 0 else "fresh kernels"
    print(f"make grade ({args.workers} workers, sandbox, feedback, {kernels}): {t_ours:.1f} s = "
          f"{n / t_ours * 60:.1f} per minute")
    print(f"ratio: {t_stock / t_ours:.2f}x stock nbgrader")
    mine = {r["student"]: (r.get("score") if r["status"] != "failed" else None) for r in rows}
    differ = {s: (stock_scores.get(s), mine.get(s)) for s in mine if stock_scores.get(s) != mine.get(s)}
    print("scores: identical to stock nbgrader" if not differ else f"scores differ (stock, ours): {differ}")
    print(f"feedback: byte for byte identical to stock nbgrader's for all {n}" if not feedback else
          f"feedback: identical to stock nbgrader's for {n - len(feedback)} of {n}; differs in the cells "
          f"{sorted(set(str(c) for cells in feedback.values() for c in cells))} of {len(feedback)}")
    print(stage_table(rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
