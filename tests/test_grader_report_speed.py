"""The report's work done once and ahead: same results, less time (dlcourse.grading.similarity, report, batch).

* the library's functions are cut out of their files with line lists split once per file
  (`node_source`), which must give exactly what `ast.get_source_segment` gives;
* the class's answers are fingerprinted once for both passes (copied pairs and library twins),
  and students who hand in the same text share one fingerprint: the matches are the same as
  with every answer fingerprinted on its own; two such texts are compared once, not once per
  pair of their students;
* `prepare_report` (run by the batch in a thread while its last submissions are graded) leaves
  the library's fingerprints made, and `write_outputs` then uses them;
* the batch starts that thread only once no worker is left to fork, and a job tried again waits
  for it before its worker is forked.
"""
import ast
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dlcourse.grading import report, similarity
from dlcourse.grading.batch import Settings, grade_batch

LIBRARY = Path(report.__file__).resolve().parents[1]
MEAN = ("def mean(xs):\n    if len(xs) == 0:\n        raise ValueError('mean of nothing')\n    total, count = 0.0, 0\n"
        "    for x in xs:\n        if x is None:\n            continue\n        total += float(x)\n        count += 1\n"
        "    return total / count if count else float('nan')\n")
CORR = ("def corr2d(x, k):\n    h, w = k.shape\n    out = torch.zeros(x.shape[0] - h + 1, x.shape[1] - w + 1)\n"
        "    for i in range(out.shape[0]):\n        for j in range(out.shape[1]):\n"
        "            out[i, j] = (x[i:i + h, j:j + w] * k).sum()\n    return out\n")


@pytest.mark.parametrize("source", [
    "x = 1\r\ny = 'é' + 'ü'\rz = 2\n\x0cw = [3,\n  4]",
    "def f(a):\n    return {'ключ': a,\n            'b': 2}\n\n\nclass C:\n    pass",
    "a = 1;  b = 'tab\there'  # comment ünïcode\n",
], ids=["line-ends", "unicode-block", "one-line"])
def test_node_source_is_get_source_segment(source):
    tree = ast.parse(source)
    lines = similarity.source_lines(source)
    nodes = [n for n in ast.walk(tree) if getattr(n, "end_lineno", None) is not None]
    assert nodes
    for node in nodes:
        assert similarity.node_source(lines, node) == ast.get_source_segment(source, node), ast.dump(node)


def test_node_source_is_get_source_segment_on_the_whole_library():
    checked = 0
    for path in sorted(LIBRARY.rglob("*.py")):
        source = path.read_text()
        lines = similarity.source_lines(source)
        for node in ast.parse(source).body:
            assert similarity.node_source(lines, node) == ast.get_source_segment(source, node), (path, node.lineno)
            checked += 1
    assert checked > 300


def test_fingerprints_made_once_give_the_same_matches():
    cells = {"mean": {"ann": MEAN, "bob": MEAN, "cid": MEAN.replace("total", "acc"),
                      "dan": "def mean(xs):\n    return sum(xs) / len(xs)\n"},
             "corr2d": {"ann": CORR, "bob": CORR.replace("out", "result"), "cid": CORR}}
    prints = similarity.fingerprint_cells(cells)
    assert prints["mean"]["ann"] is prints["mean"]["bob"]   # the same text: one fingerprint
    assert "dan" not in prints["mean"]   # too short to compare
    alone = similarity.compare_class(cells)
    shared = similarity.compare_class(cells, prints=prints)
    assert [(m.cell, m.first, m.second, m.similarity) for m in alone[0]] == \
        [(m.cell, m.first, m.second, m.similarity) for m in shared[0]]
    assert {(m.first, m.second) for m in shared[0] if m.cell == "mean"} == {("ann", "bob"), ("ann", "cid"), ("bob", "cid")}


def test_the_same_two_texts_are_compared_once_for_all_their_students(monkeypatch):
    renamed = MEAN.replace("total", "acc")
    texts = {"ann": MEAN, "bob": MEAN, "cid": MEAN, "dan": renamed, "eve": renamed}
    copydetect = similarity.import_copydetect()
    calls, compare_files = [], copydetect.compare_files
    monkeypatch.setattr(copydetect, "compare_files", lambda a, b: calls.append((a, b)) or compare_files(a, b))
    matches, _ = similarity.compare_class({"mean": texts})
    assert {(m.first, m.second) for m in matches} == {(a, b) for a in texts for b in texts if a < b}   # all ten pairs
    assert len(calls) == 3   # MEAN with itself, MEAN with renamed, renamed with itself
    for m in matches:   # each as if its two students had been the whole class
        (alone,), _ = similarity.compare_class({"mean": {m.first: texts[m.first], m.second: texts[m.second]}})
        assert (m.cell, m.first, m.second, m.similarity, m.first_html, m.second_html) == \
            (alone.cell, alone.first, alone.second, alone.similarity, alone.first_html, alone.second_html)


def test_library_twins_from_made_fingerprints_are_the_same():
    twin = similarity.reference_functions(LIBRARY)["dlcourse/conv.py: corr2d"]
    cells = {"corr2d": {"eve": twin.replace("corr2d", "my_corr"), "ann": CORR}}
    by_source = similarity.library_twins(cells, similarity.reference_functions(LIBRARY))
    made = similarity.library_twins(cells, None, prints=similarity.fingerprint_cells(cells),
                                    reference_prints=similarity.library_fingerprints(LIBRARY),
                                    reference_holders=similarity.library_holders(LIBRARY))
    assert [(m.first, m.second, m.similarity) for m in by_source] == [(m.first, m.second, m.similarity) for m in made]
    assert similarity.library_holders(LIBRARY) is similarity.library_holders(LIBRARY)   # indexed once
    assert [m.first for m in made] == ["eve"] and made[0].second == "dlcourse/conv.py: corr2d"


@pytest.mark.parametrize("kept", [False, True], ids=["lexed-now", "lexing-kept"])
def test_library_hashes_without_fingerprints_are_copydetects(kept):
    """LibraryPrints.hashes(name), which the library's hash index is built from without making a
    fingerprint, is the hash set of the fingerprint copydetect makes, for every function of the
    course library: lexed in this process, or read back as the cache keeps the lexing (JSON)."""
    import json
    references = similarity.reference_functions(LIBRARY)
    made = similarity.LibraryPrints.made_from(references)
    lexed = json.loads(json.dumps(made.lexed)) if kept else made.lexed
    quick = similarity.LibraryPrints(references, lexed)
    assert len(quick) == len(made) > 100
    assert all(quick.hashes(name) == {int(h) for h in made[name].hashes} for name in made)
    assert all(quick[name].hashes == made[name].hashes for name in list(made)[:20])   # made when asked for


def test_prepare_report_leaves_the_library_fingerprinted(tmp_path, monkeypatch):
    library, cache = _library_of_one(tmp_path)
    monkeypatch.setenv("DLCOURSE_CACHE_DIR", str(cache))
    (library / "stats.py").write_text(MEAN + "\n\n" + CORR)
    report.prepare_report(library)
    made = similarity.library_fingerprints(library)
    assert set(made) == {"mylib/stats.py: mean", "mylib/stats.py: corr2d"}
    assert similarity.library_fingerprints(library) is made   # kept: write_outputs finds them made
    assert len(list(cache.glob("library-fingerprints-*.json"))) == 1


def test_copydetect_is_imported_without_pyplot_and_pyplot_stays_real():
    """The report's copydetect skips the pyplot import of its package (CopyDetector's own HTML
    report); a later `import matplotlib.pyplot` in the same process is the real module, and the
    fingerprints compare as with a plain `import copydetect` (checked in a fresh Python)."""
    code = ("import sys\nfrom dlcourse.grading import similarity\n"
            "similarity.import_copydetect()\n"
            "assert 'copydetect' in sys.modules and 'matplotlib.pyplot' not in sys.modules\n"
            f"cells = {{'c': {{'ann': {CORR!r}, 'bob': {CORR!r}.replace('out', 'res')}}}}\n"
            "pairs, _ = similarity.compare_class(cells)\n"
            "import matplotlib.pyplot as plt\n"
            "assert callable(plt.figure) and sys.modules['matplotlib.pyplot'] is plt\n"
            "print([(m.first, m.second, m.similarity) for m in pairs])\n")
    plain = code.replace("similarity.import_copydetect()\n", "import copydetect\n").replace(
        " and 'matplotlib.pyplot' not in sys.modules", "")
    runs = [subprocess.run([sys.executable, "-c", c], capture_output=True, text=True, timeout=120) for c in (code, plain)]
    for run in runs:
        assert run.returncode == 0, run.stderr
    assert runs[0].stdout == runs[1].stdout and "ann" in runs[0].stdout


def test_prepare_report_never_raises(tmp_path):
    report.prepare_report(tmp_path / "no such folder")
    report.prepare_report(None)


def test_the_tail_work_starts_after_the_last_fork(tmp_path, monkeypatch):
    """A tiny class of three graded one at a time (fresh kernels, no sandbox): the report's
    preparation starts in its thread once the last worker is forked, and no worker is forked
    while it runs."""
    import multiprocessing.context

    import nbformat

    from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK
    from nbgrader_harness import solved, tiny_course

    course = tiny_course(tmp_path / "course")
    folder = tmp_path / "class"
    for student in ("ann", "bob", "cid"):
        (folder / student).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, {}), folder / student / f"{NOTEBOOK}.ipynb")
    events = []
    fork = multiprocessing.context.ForkProcess.start

    def start(process):
        events.append(("fork", any(t.name == "tail-work" and t.is_alive() for t in threading.enumerate())))
        return fork(process)

    def tail(library=report.LIBRARY):
        events.append(("tail", threading.current_thread().name))
        time.sleep(0.5)

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", start)
    monkeypatch.setattr(report, "prepare_report", tail)
    rows = grade_batch(course.root, ASSIGNMENT, folder, Settings(workers=1, sandbox=False, feedback=False,
                                                                  cell_timeout=60, budget=300), progress=False)
    assert all(r["status"] == "graded" for r in rows), rows
    forks = [i for i, e in enumerate(events) if e[0] == "fork"]
    assert len(forks) >= 3 and events.count(("tail", "tail-work")) == 1, events
    assert events.index(("tail", "tail-work")) > forks[-1]
    assert not any(alive for kind, alive in (e for e in events if e[0] == "fork")), events


def test_the_feedback_templates_are_compiled_once_before_the_workers(tmp_path, monkeypatch):
    """The batch compiles the feedback's Jinja templates in its own process
    (runner.compile_feedback_templates) before its workers fork: the workers' feedback (nbgrader's
    GenerateFeedback with the course's exporter) loads every template from the batch's cache and
    compiles none. The workers are forks: what is compiled after that step in another process is theirs
    (the batch itself compiles its report's page from a string)."""
    import os

    import jinja2
    import nbformat

    from dlcourse.grading import batch
    from fixtures.tiny_assignment import ASSIGNMENT, NOTEBOOK
    from nbgrader_harness import solved, tiny_course

    course = tiny_course(tmp_path / "course")
    folder, compiled = tmp_path / "class", tmp_path / "compiled-in-workers.txt"
    for student in ("ann", "bob"):
        (folder / student).mkdir(parents=True)
        nbformat.write(solved(course, ASSIGNMENT, NOTEBOOK, {}), folder / student / f"{NOTEBOOK}.ipynb")
    ahead, compile_, batch_pid = batch.compile_feedback_templates, jinja2.Environment.compile, os.getpid()
    stored = []

    def counting_compile(env, source, name=None, *args, **kwargs):
        if os.getpid() != batch_pid:
            with open(compiled, "a") as f:
                f.write(f"{name}\n")
        return compile_(env, source, name, *args, **kwargs)

    def compile_ahead(cfg, bytecode_dir, release=()):
        ahead(cfg, bytecode_dir, release)
        stored.extend(bytecode_dir.iterdir())
        monkeypatch.setattr(jinja2.Environment, "compile", counting_compile)   # from here on: the workers

    monkeypatch.setattr(batch, "compile_feedback_templates", compile_ahead)
    rows = grade_batch(course.root, ASSIGNMENT, folder, Settings(workers=2, sandbox=False, feedback=True,
                                                                  cell_timeout=60, budget=300), progress=False)
    assert all(r["status"] == "graded" for r in rows), rows
    assert stored, "nothing was compiled ahead"
    assert all((course.root / "feedback" / s / ASSIGNMENT / f"{NOTEBOOK}.html").is_file() for s in ("ann", "bob"))
    assert not compiled.exists(), f"the workers compiled: {compiled.read_text()}"


def _in_a_new_process(library: Path, cache: Path) -> dict:
    """{name: (raw code, filtered code, token coverage, sorted hashes, offsets)} of the library's
    fingerprints as the next batch (a new Python: its own string hashes) gets them."""
    import json
    import subprocess
    import sys
    code = ("import json, sys\nfrom pathlib import Path\nfrom dlcourse.grading import similarity\n"
            "made = similarity.library_fingerprints(Path(sys.argv[1]), Path(sys.argv[2]))\n"
            "print(json.dumps({n: [fp.raw_code, fp.filtered_code, fp.token_coverage, len(fp.hashes), fp.offsets.tolist()]"
            " for n, fp in made.items()}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(library), str(cache)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def _described(made: dict) -> dict:
    return {n: [fp.raw_code, fp.filtered_code, fp.token_coverage, len(fp.hashes), fp.offsets.tolist()]
            for n, fp in made.items()}


def _library_of_one(tmp_path) -> tuple[Path, Path]:
    """(a library of one module holding MEAN, an empty cache folder)."""
    library = tmp_path / "lib" / "mylib"
    library.mkdir(parents=True)
    (library / "stats.py").write_text(MEAN)
    return library, tmp_path / "cache"


def test_the_library_fingerprints_are_kept_for_the_next_batch(tmp_path):
    library, cache = _library_of_one(tmp_path)
    first = _in_a_new_process(library, cache)
    kept = list(cache.glob("library-fingerprints-*.json"))
    assert len(kept) == 1 and kept[0].stat().st_mode & 0o077 == 0
    stamp = kept[0].stat().st_mtime_ns
    assert _in_a_new_process(library, cache) == first   # read back, hashes made in that process
    assert kept[0].stat().st_mtime_ns == stamp   # not made again
    # a fingerprint read back matches a student's made in the same process
    again = similarity.library_fingerprints(library, cache)
    twins = similarity.library_twins({"mean": {"eve": MEAN.replace("total", "acc")}}, None, reference_prints=again)
    assert [(m.first, m.second) for m in twins] == [("eve", "mylib/stats.py: mean")]
    # a changed library: made again, the old file replaced
    (library / "stats.py").write_text(MEAN + "\n\n" + CORR)
    assert set(_in_a_new_process(library, cache)) == {"mylib/stats.py: mean", "mylib/stats.py: corr2d"}
    assert len(list(cache.glob("library-fingerprints-*"))) == 1


def test_a_damaged_cache_file_is_made_again(tmp_path):
    library, cache = _library_of_one(tmp_path)
    first = _in_a_new_process(library, cache)
    (kept,) = cache.glob("library-fingerprints-*.json")
    kept.write_text('{"mylib/stats.py: mean": ["not", "enough')
    assert _in_a_new_process(library, cache) == first
