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

`--realistic` grades a real class of 30 (REALISTIC): two thirds correct, the rest wrong answers,
untouched releases, an endless loop in one part, an exception in one part, a plain-Python-loops
answer to every part, a correct answer that spends 5 s more than the model solution in one cell,
and a kernel that kills itself, with the same course limit per cell for both (60 s unless
--cell-timeout): stock nbgrader gives every cell that limit; `make grade` derives each cell's from
the model solution's time (timelimits.py). Prints the times per kind of submission: ours from each
row's seconds (its worker's wall time), stock's from when each autograded notebook was written
(nbgrader grades one after another; a notebook it could not grade has no file, so its time is
counted in the next one's).

    .venv/bin/python benchmarks/grade_benchmark.py --realistic

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

from nbgrader_harness import make_course, model_answers, solved  # noqa: E402

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
# plain Python loops over single numbers in every part: what a student who avoids tensor slicing writes
PLAIN_LOOPS = {
    "corr1d": "def corr1d(x, k):\n    n, kw = len(x), len(k)\n    out = torch.zeros(n - kw + 1, dtype=x.dtype)\n"
              "    for i in range(n - kw + 1):\n        total = 0.0\n        for a in range(kw):\n"
              "            total += float(x[i + a]) * float(k[a])\n        out[i] = total\n    return out",
    "corr2d": "def corr2d(x, k):\n    kh, kw = k.shape\n    h, w = x.shape[0] - kh + 1, x.shape[1] - kw + 1\n"
              "    out = torch.zeros(h, w, dtype=x.dtype)\n    for i in range(h):\n        for j in range(w):\n"
              "            total = 0.0\n            for a in range(kh):\n                for b in range(kw):\n"
              "                    total += float(x[i + a, j + b]) * float(k[a, b])\n            out[i, j] = total\n"
              "    return out",
    "output_size": "def output_size(n, k, stride=1, padding=0):\n    count, start = 0, 0\n"
                   "    while start + k <= n + 2 * padding:\n        count += 1\n        start += stride\n    return count",
    "conv2d": "def conv2d(x, weight, bias=None, stride=1, padding=0):\n    c, h, w = x.shape\n    o, _, kh, kw = weight.shape\n"
              "    h_out, w_out = output_size(h, kh, stride, padding), output_size(w, kw, stride, padding)\n"
              "    out = torch.zeros(o, h_out, w_out, dtype=x.dtype)\n    for f in range(o):\n        for i in range(h_out):\n"
              "            for j in range(w_out):\n                total = 0.0 if bias is None else float(bias[f])\n"
              "                for ch in range(c):\n                    for a in range(kh):\n                        for b in range(kw):\n"
              "                            r, s = i * stride + a - padding, j * stride + b - padding\n"
              "                            if 0 <= r < h and 0 <= s < w:\n"
              "                                total += float(x[ch, r, s]) * float(weight[f, ch, a, b])\n"
              "                out[f, i, j] = total\n    return out",
    "max_pool2d": "def max_pool2d(x, kernel_size, stride=None):\n    stride = kernel_size if stride is None else stride\n"
                  "    c, h, w = x.shape\n    h_out, w_out = output_size(h, kernel_size, stride), output_size(w, kernel_size, stride)\n"
                  "    out = torch.zeros(c, h_out, w_out, dtype=x.dtype)\n    for ch in range(c):\n        for i in range(h_out):\n"
                  "            for j in range(w_out):\n                best = float('-inf')\n"
                  "                for a in range(kernel_size):\n                    for b in range(kernel_size):\n"
                  "                        best = max(best, float(x[ch, i * stride + a, j * stride + b]))\n"
                  "                out[ch, i, j] = best\n    return out",
}
VARIANTS.update({
    "off_by_one": {"output_size": "def output_size(n, k, stride=1, padding=0):\n    return (n + 2 * padding - k) // stride"},
    "no_bias": {"conv2d": PLAIN_LOOPS["conv2d"].replace("0.0 if bias is None else float(bias[f])", "0.0")},
    "loop_corr2d": {"corr2d": "def corr2d(x, k):\n    i = 0\n    while i >= 0:\n        i += 1"},
    "exception": {"conv2d": "def conv2d(x, weight, bias=None, stride=1, padding=0):\n"
                            "    raise NotImplementedError('conv2d: not done yet')"},
    "plain_loops": PLAIN_LOOPS,
    "slow_5s": "slow_5s",   # the model answer of corr1d after 5 s of sleep (`write_class`)
})
# a class of 30: 19 correct (with the two slow ones, two thirds), 3 wrong, 2 untouched, 2 looping,
# 1 exception, 1 that kills its kernel, in a fixed order
REALISTIC = (["correct"] * 19 + ["plain_loops", "slow_5s", "flipped", "off_by_one", "no_bias", "release", "release",
                                 "loop", "loop_corr2d", "exception", "exit"])
REALISTIC = [REALISTIC[(i * 7) % len(REALISTIC)] for i in range(len(REALISTIC))]   # 7 and 30 coprime: a permutation
STAGES = ("kernel_start", "imports", "execution", "bookkeeping", "feedback")


def kind_of(i: int, mix: bool, realistic: bool = False) -> str:
    if realistic:
        return REALISTIC[i % len(REALISTIC)]
    if not mix:
        return "correct"
    return MIX[i % len(MIX)] if i % 25 else "exit"


def fresh_course(path: Path):
    path.mkdir(parents=True)
    return make_course(path, [ASSIGNMENT])


def write_class(course, folder: Path, count: int, mix: bool, realistic: bool = False) -> None:
    for i in range(count):
        kind = kind_of(i, mix, realistic)
        overrides = VARIANTS[kind]
        if overrides == "slow_5s":
            overrides = {"corr1d": "import time\ntime.sleep(5)\n" + model_answers(course, ASSIGNMENT, NOTEBOOK)["corr1d"]}
        nb = course.read("exercises", ASSIGNMENT, f"{NOTEBOOK}.ipynb") if overrides == "release" \
            else solved(course, ASSIGNMENT, NOTEBOOK, overrides)
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
    start, wall = time.monotonic(), time.time()
    course.autograde(ASSIGNMENT, cell_timeout=cell_timeout)
    autograded = time.time()
    course.feedback(ASSIGNMENT)
    elapsed = time.monotonic() - start
    stock_times.update(autograde_times(course.root, wall, autograded))
    return elapsed, gradebook_scores(course.root, os.listdir(folder)), course.root


stock_times = {}   # {student: seconds} of the last stock run's autograde (`autograde_times`)


def autograde_times(root: Path, started: float, ended: float) -> dict:
    """{student: seconds} of a sequential `nbgrader autograde`: from when each autograded notebook
    was written to when the one before it was (or the start). A student whose notebook could not be
    graded has no file: that time is counted in the next student's (the end, for the last)."""
    done = sorted((p.stat().st_mtime, p.parts[-3]) for p in (root / "autograded").glob(f"*/{ASSIGNMENT}/{NOTEBOOK}.ipynb"))
    times, last = {}, started
    for mtime, student in done:
        times[student], last = mtime - last, mtime
    if done and ended > last:
        times["(after the last notebook)"] = ended - last
    return times


def per_kind_table(count: int, mix: bool, realistic: bool, rows: list[dict]) -> str:
    """Mean seconds per kind of submission: stock nbgrader's autograde (sequential) and ours (each
    row's wall time in its worker; several run at once)."""
    ours = {r["student"]: r.get("seconds") for r in rows}
    kinds = {}
    for i in range(count):
        kinds.setdefault(kind_of(i, mix, realistic), []).append(f"s{i:03d}")
    lines = [f"  {'kind':12s} {'n':>3s} {'stock s':>8s} {'ours s':>7s}   (stock: autograde only; ours: a worker's wall time)"]
    for kind, students in kinds.items():
        st = [stock_times[s] for s in students if s in stock_times]
        ou = [ours[s] for s in students if ours.get(s) is not None]
        lines.append(f"  {kind:12s} {len(students):3d} {statistics.mean(st) if st else float('nan'):8.2f} "
                     f"{statistics.mean(ou) if ou else float('nan'):7.2f}")
    if "(after the last notebook)" in stock_times:
        lines.append(f"  stock's autograde after its last notebook: {stock_times['(after the last notebook)']:.2f} s")
    return "\n".join(lines)


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
    p.add_argument("--cell-timeout", type=int, default=None, help="the course's limit per cell (default 30; 60 with "
                   "--realistic)")
    p.add_argument("--mix", action="store_true", help="a mixed class (wrong and hostile submissions too)")
    p.add_argument("--realistic", action="store_true", help="the class REALISTIC (30 unless --count)")
    p.add_argument("--timeout-factor", type=float, default=None,
                   help="each cell's limit as a multiple of the model solution's time (default: the CLI's; 0: every "
                        "cell gets --cell-timeout, as in stock nbgrader)")
    p.add_argument("--fork-kernels", action=argparse.BooleanOptionalAction, default=Settings().fork_kernels,
                   help="fork the kernels from the kernel template, as root (default: the CLI's)")
    args = p.parse_args()
    if args.cell_timeout is None:
        args.cell_timeout = 60 if args.realistic else 30
    if args.realistic and "--count" not in sys.argv:
        args.count = len(REALISTIC)
    os.environ["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as tmp:
        tmp = Path(tmp)
        seed = fresh_course(tmp / "seed")
        folder = tmp / "subs"
        write_class(seed, folder, args.count, args.mix, args.realistic)
        t_stock, stock_scores, stock_root = stock(tmp, folder, args.cell_timeout)
        settings = Settings(cell_timeout=args.cell_timeout, workers=args.workers, fork_kernels=args.fork_kernels,
                            timeout_factor=args.timeout_factor)
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
    for r in rows:
        if r["status"] == "failed":
            print(f"failed: {r['student']} ({kind_of(int(r['student'][1:]), args.mix, args.realistic)}): {r.get('reason')}")
        for note in r.get("notes", []):
            if "limit" in note or "stopped after" in note:
                print(f"limit: {r['student']} ({kind_of(int(r['student'][1:]), args.mix, args.realistic)}): {note}")
    print("mean seconds per kind of submission:\n" + per_kind_table(n, args.mix, args.realistic, rows))
    print(stage_table(rows))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
