"""Render: answers that look copied, one answer cell compared across the class, with copydetect.

copydetect (a plagiarism detector made for programming classes: Schleimer, Wilkerson and Aiken's
winnowing, as in MOSS) tokenizes each answer with pygments and replaces every variable, function
and class name with one letter and every string with another, so renaming and reformatting change
nothing; comments and blank lines are dropped. Each answer becomes a set of fingerprints (hashes
of `noise` consecutive tokens, winnowed); the release's own code for that cell (the stub every
student starts from) is boilerplate and never counts. The similarity of a pair is copydetect's:
for each side, the share of its fingerprinted tokens that the other side has too.

Cost: comparing every pair is quadratic in the class (5 million pairs for 3000 students). Here
each answer is fingerprinted once (linear), the fingerprints go into an index (fingerprint ->
students), and only pairs that share a fingerprint held by at most `common` students are compared
with copydetect's `compare_files`: at most common**2 pairs per fingerprint, so the pass stays
linear in the class. A fingerprint that more than `common` students share is an idiom of the
task (or one source copied by a crowd, which the library-twin check and the mistakes table show),
like the release's code; such a crowd is still reported when its answers are the same program
(names and layout aside): `compare_class` groups the answers by their filtered code (linear too).
Answers shorter than `shortest` tokens are not compared: two honest
`return sum(xs) / len(xs)` are the same program.

Library twins: every function and class of the course library (`lib/dlcourse`, the reference
implementations the notebooks import) is fingerprinted the same way, and an answer is flagged
when `threshold` or more of its tokens come from one of them (renamed or not).

    pairs, crowds = compare_class({"corr2d": {"ann": src_a, "bob": src_b, ...}}, release={"corr2d": stub})
    twins = library_twins({"corr2d": {...}}, reference_functions(Path("lib/dlcourse")))

The library's fingerprints are the same for every batch and take the longest (copydetect's import
and some 300 functions lexed: about 2 s); `library_fingerprints` makes them once per process and
keeps their lexing (most of the cost) in the grader's cache folder (`cache_dir()`, keyed by the
library's sources) for the next batch, so a grader can have them ready in the background while its last submissions run
(batch.py); the fingerprints of a class's answers are made once for both passes (`fingerprint_cells`).
"""
import ast
import hashlib
import io
import os
import json
import re
import sys
import tempfile
import threading
import types
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

NOISE = 25        # copydetect's noise threshold: fingerprints are hashes of 25 filtered characters
# copydetect's guarantee threshold, its default: every k-gram is a fingerprint (window 1). A longer
# window keeps fewer, but which ones depends on Python's string hashes, randomized per process:
# the similarities would change from run to run.
GUARANTEE = 25
THRESHOLD = 0.8   # a pair is shown when 80 % of one side's tokens are in the other
SHORTEST = 50     # answers with fewer fingerprinted tokens are too short to tell copying from idiom
COMMON = 25       # a fingerprint held by more students than this is an idiom of the task


@dataclass
class Match:
    """Two answers to one cell that look copied (or an answer and a library function)."""
    cell: str              # the answer cell's grade id
    first: str             # a student
    second: str            # another student, or "dlcourse/conv.py: corr2d" for a library twin
    similarity: tuple      # (share of first's tokens found in second, share of second's in first)
    first_html: str        # first's code, HTML-escaped, the copied parts in <mark>
    second_html: str

    @property
    def score(self) -> float:
        return max(self.similarity)


def import_copydetect():
    """The copydetect package, imported without matplotlib.pyplot where nothing has imported pyplot
    yet: copydetect's package imports it (0.2 to 0.3 s) for CopyDetector's own HTML report, which
    the grader never makes (it takes CodeFingerprint, compare_files and copydetect.utils). A stand-in
    holds pyplot's place during that import only, so a later `import matplotlib.pyplot` is the real one."""
    if "copydetect" not in sys.modules and "matplotlib.pyplot" not in sys.modules:
        stand_in = sys.modules["matplotlib.pyplot"] = types.ModuleType("matplotlib.pyplot")
        try:
            import copydetect.utils  # noqa: F401
        finally:
            if sys.modules.get("matplotlib.pyplot") is stand_in:
                del sys.modules["matplotlib.pyplot"]
    import copydetect.utils
    return copydetect


def _fingerprint(code: str, boilerplate=None):
    CodeFingerprint = import_copydetect().CodeFingerprint
    return CodeFingerprint("answer.py", NOISE, GUARANTEE - NOISE + 1, boilerplate=boilerplate, fp=io.StringIO(code),
                           language="python")


def _compare(cell: str, first: str, second: str, a, b) -> Match:
    _, sims, slices = import_copydetect().compare_files(a, b)
    highlight_overlap = import_copydetect().utils.highlight_overlap
    marked = [highlight_overlap(fp.raw_code, s, "<mark>", "</mark>", escape_html=True)[0] if s.ndim == 2 and s.shape[1] else
              str(_escape(fp.raw_code)) for fp, s in zip((a, b), slices)]
    return Match(cell, first, second, (float(sims[0]), float(sims[1])), *marked)


def _escape(text: str) -> str:
    from markupsafe import escape
    return str(escape(text))


def _fingerprints(answers: dict[str, str], boilerplate_code: str) -> dict:
    """{student: CodeFingerprint} of the answers long enough to compare (release code left out)."""
    boilerplate = None
    if boilerplate_code.strip():
        import numpy as np
        boilerplate = np.array(sorted(_fingerprint(boilerplate_code).hashes))
    prints, made = {}, {}   # made: code -> its fingerprint (students who hand in the same text share one)
    for student, code in answers.items():
        if code and code.strip():
            if code not in made:
                made[code] = _fingerprint(code, boilerplate)
            if made[code].token_coverage >= SHORTEST:
                prints[student] = made[code]
    return prints


@dataclass
class Crowd:
    """More than `common` students whose answers to one cell are the same program (names, comments
    and layout aside): too many for pairs, shown as one group."""
    cell: str
    students: list
    code: str   # one of their answers (the first student's)


def _pairs(cell: str, prints: dict, threshold: float, common: int) -> list[Match]:
    holders = defaultdict(list)
    for student, fp in prints.items():
        for h in fp.hashes:
            holders[h].append(student)
    pairs = set()
    for students in holders.values():
        if 1 < len(students) <= common:
            pairs.update((a, b) for i, a in enumerate(students) for b in students[i + 1:])
    compared, matches = {}, []   # students who handed in the same text share a fingerprint: compared once
    for a, b in sorted(tuple(sorted(p)) for p in pairs):
        key = (id(prints[a]), id(prints[b]))
        if key not in compared:
            compared[key] = _compare(cell, a, b, prints[a], prints[b])
        matches.append(replace(compared[key], first=a, second=b))
    return [m for m in matches if m.score >= threshold]


def _crowds(cell: str, prints: dict, answers: dict, common: int) -> list[Crowd]:
    groups = defaultdict(list)
    for student, fp in prints.items():
        groups[fp.filtered_code].append(student)
    return [Crowd(cell, sorted(s), answers[sorted(s)[0]]) for s in groups.values() if len(s) > common]


def fingerprint_cells(cells: dict[str, dict[str, str]], release: dict[str, str] | None = None) -> dict:
    """{answer cell: {student: CodeFingerprint}} of the answers long enough to compare (each once,
    the release's code for the cell left out): what `compare_class` and `library_twins` take as
    `prints`."""
    release = release or {}
    return {cell: _fingerprints(answers, release.get(cell, "")) for cell, answers in cells.items()}


def compare_class(cells: dict[str, dict[str, str]], release: dict[str, str] | None = None,
                  threshold: float = THRESHOLD, common: int = COMMON,
                  prints: dict | None = None) -> tuple[list[Match], list[Crowd]]:
    """(pairs of students whose answers to one cell look copied, most similar first; crowds of
    more than `common` students with the same program), each answer fingerprinted once.

    cells: {answer cell: {student: its source}}; release: {answer cell: the release's source};
    prints: `fingerprint_cells(cells, release)` where the caller has it already."""
    prints_of = prints if prints is not None else fingerprint_cells(cells, release)
    matches, crowds = [], []
    for cell, answers in cells.items():
        prints = prints_of[cell]
        matches += _pairs(cell, prints, threshold, common)
        crowds += _crowds(cell, prints, answers, common)
    return (sorted(matches, key=lambda m: (-m.score, m.cell, m.first, m.second)),
            sorted(crowds, key=lambda c: (-len(c.students), c.cell)))


def similar_answers(cells: dict[str, dict[str, str]], release: dict[str, str] | None = None,
                    threshold: float = THRESHOLD, common: int = COMMON) -> list[Match]:
    """The pairs of `compare_class`."""
    return compare_class(cells, release, threshold, common)[0]


def source_lines(source: str) -> list[str]:
    """`source`'s lines with their ends, split only at \\r\\n, \\r and \\n: the lines the ast
    module's line numbers count."""
    return re.findall(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", source)


def node_source(lines: list[str], node: ast.AST) -> str:
    """The source of `node` (as `ast.get_source_segment`, whose column offsets count UTF-8 bytes),
    from the file's `source_lines`, which are split once for all its nodes."""
    first, last = node.lineno - 1, node.end_lineno - 1
    if first == last:
        return lines[first].encode()[node.col_offset:node.end_col_offset].decode()
    return "".join([lines[first].encode()[node.col_offset:].decode(), *lines[first + 1:last],
                    lines[last].encode()[:node.end_col_offset].decode()])


def reference_functions(library: Path, skip=("grading", "widgets")) -> dict[str, str]:
    """{"dlcourse/<module>.py: <name>": source} of every top-level function and class of the
    course library (its grading tools and widgets left out)."""
    library = Path(library)
    refs = {}
    for path in sorted(library.rglob("*.py")):
        if any(part in skip for part in path.relative_to(library).parts):
            continue
        source = path.read_text()
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        lines = source_lines(source)
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                refs[f"{library.name}/{path.relative_to(library).as_posix()}: {node.name}"] = node_source(lines, node)
    return refs


_LIBRARY_PRINTS: dict = {}   # the library's folder -> ({name: CodeFingerprint}, {hash: [names]}) (`_library`)
_LIBRARY_LOCK = threading.Lock()


def cache_dir() -> Path:
    """Where the grader keeps what it can make again (the library's fingerprints): $DLCOURSE_CACHE_DIR,
    else $XDG_CACHE_HOME/dlcourse, else ~/.cache/dlcourse. Only its owner can read or write it."""
    if os.environ.get("DLCOURSE_CACHE_DIR"):
        return Path(os.environ["DLCOURSE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dlcourse"


def _library_key(references: dict) -> str:
    h = hashlib.sha256(f"{import_copydetect().__version__} {NOISE} {GUARANTEE}".encode())
    for name, src in sorted(references.items()):
        h.update(f"\0{name}\0{src}".encode())
    return h.hexdigest()[:32]


def _lexing(fp) -> list:
    """[filtered code, [offsets, their dtype]] of a CodeFingerprint: what `_from_filtered` takes."""
    return [fp.filtered_code, [fp.offsets.tolist(), str(fp.offsets.dtype)]]


def _from_filtered(raw: str, filtered: str, offsets):
    """The CodeFingerprint that `_fingerprint(raw)` makes, from its filtered code and offsets (the
    lexing, which is most of the cost, done before): its hashes are made here, in this process
    (copydetect hashes with Python's hash(), which differs from process to process)."""
    import numpy as np
    fp = import_copydetect().CodeFingerprint("answer.py", NOISE, GUARANTEE - NOISE + 1, fp=io.StringIO(filtered), filter=False)
    fp.raw_code, fp.offsets = raw, np.array(offsets[0], dtype=offsets[1])
    return fp


class LibraryPrints(Mapping):
    """{name: CodeFingerprint} of the library's functions, each made from its lexing (filtered code
    and offsets, `_from_filtered`) when first asked for. `hashes(name)` gives a function's
    fingerprint hashes without making it: copydetect's k-grams hashed as copydetect hashes them
    (window 1: every k-gram is a fingerprint), all that `holders` needs to find the few functions
    that an answer could come from. Only those are then made (`library_twins`)."""

    def __init__(self, references: dict, lexed: dict, made: dict | None = None):
        """references: {name: source}; lexed: {name: [filtered code, [offsets, dtype]]} (what the
        cache keeps); made: fingerprints made already."""
        self._references, self.lexed, self._made = references, lexed, dict(made or {})

    @classmethod
    def made_from(cls, references: dict) -> "LibraryPrints":
        """Every function of `references` lexed and fingerprinted now."""
        made = {name: _fingerprint(src) for name, src in references.items() if src.strip()}
        return cls(references, {name: _lexing(fp) for name, fp in made.items()}, made)

    def __getitem__(self, name):
        if name not in self._made:
            self._made[name] = _from_filtered(self._references[name], *self.lexed[name])
        return self._made[name]

    def __iter__(self):
        return iter(self.lexed)

    def __len__(self) -> int:
        return len(self.lexed)

    def hashes(self, name: str) -> set:
        if name in self._made:
            return self._made[name].hashes
        filtered = self.lexed[name][0]
        return {hash(filtered[i:i + NOISE]) for i in range(len(filtered) - NOISE + 1)}


def _cached_prints(references: dict, cache: Path | None, library: Path) -> Mapping:
    """The fingerprints of `references`, their lexing read from `cache` where it was done before with
    the same sources and settings (JSON: the filtered code and offsets of each function), else done
    and kept there. Whatever goes wrong with the cache, they are made."""
    if cache is None:
        return LibraryPrints.made_from(references)
    place = hashlib.sha256(str(Path(library).resolve()).encode()).hexdigest()[:12]   # one file per library folder
    path = Path(cache) / f"library-fingerprints-{place}-{_library_key(references)}.json"
    try:
        if path.is_file():
            kept = json.loads(path.read_text())
            return LibraryPrints(references, {name: kept[name] for name in references if references[name].strip()})
    except Exception:  # noqa: BLE001 -- a damaged cache file: make them again
        pass
    prints = LibraryPrints.made_from(references)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(prints.lexed, f)
        os.replace(tmp, path)
        for old in path.parent.glob(f"library-fingerprints-{place}-*"):   # this folder's older sources
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass
    return prints


def library_fingerprints(library: Path, cache: Path | None = None) -> Mapping:
    """{"dlcourse/<module>.py: <name>": CodeFingerprint} of `reference_functions(library)` (a
    LibraryPrints: each made when first asked for), lexed once per process (thread-safe: a
    background thread may be lexing them when they are asked for) and the lexing kept in `cache` (default: `cache_dir()`) for the next batch while the library is unchanged."""
    return _library(library, cache)[0]


def library_holders(library: Path, cache: Path | None = None) -> dict:
    """{hash: [names of the library's functions whose fingerprints hold it]} (`holders`) of
    `library_fingerprints(library, cache)`, made once per process with them."""
    return _library(library, cache)[1]


def holders(prints: dict) -> dict:
    """{hash: [names]} of {name: CodeFingerprint}: which fingerprints hold each hash."""
    held = defaultdict(list)
    for name in prints:
        for h in prints.hashes(name) if isinstance(prints, LibraryPrints) else prints[name].hashes:
            held[h].append(name)
    return held


def _library(library: Path, cache: Path | None) -> tuple[dict, dict]:
    key = str(Path(library).resolve())
    with _LIBRARY_LOCK:
        if key not in _LIBRARY_PRINTS:
            prints = _cached_prints(reference_functions(library), cache or cache_dir(), library)
            _LIBRARY_PRINTS[key] = prints, holders(prints)
        return _LIBRARY_PRINTS[key]


def library_twins(cells: dict[str, dict[str, str]], references: dict[str, str] | None,
                  release: dict[str, str] | None = None, threshold: float = THRESHOLD,
                  prints: dict | None = None, reference_prints: dict | None = None,
                  reference_holders: dict | None = None) -> list[Match]:
    """Answers of which `threshold` or more of the tokens come from one library function, most
    similar first (the student's share decides; the library function may be longer).

    references: {name: source} of the library's functions (or their `reference_prints`, e.g.
    `library_fingerprints(library)`); prints: `fingerprint_cells(cells, release)` where the
    caller has it already; reference_holders: `holders(reference_prints)` (`library_holders`)."""
    ref_prints = reference_prints if reference_prints is not None else \
        {name: _fingerprint(src) for name, src in references.items() if src.strip()}
    prints_of = prints if prints is not None else fingerprint_cells(cells, release)
    held = reference_holders if reference_holders is not None and reference_prints is not None else holders(ref_prints)
    matches = []
    for cell in cells:
        for student, fp in prints_of[cell].items():
            names = {name for h in fp.hashes for name in held.get(h, ())}
            best = None
            for name in sorted(names):
                match = _compare(cell, student, name, fp, ref_prints[name])
                if match.similarity[0] >= threshold and (best is None or match.similarity[0] > best.similarity[0]):
                    best = match
            if best is not None:
                matches.append(best)
    return sorted(matches, key=lambda m: (-m.similarity[0], m.cell, m.first))
