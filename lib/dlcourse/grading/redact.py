"""Render: RedactHiddenSource, no output of the feedback quotes the hidden tests.

The grading kernel has to receive a test cell's hidden part to run it, and student code can read
it there: IPython keeps every cell's source in `linecache`, so `inspect.stack()`,
`sys._getframe(1)` or a traceback's frames give the whole test cell, seeds included. Printed in
the test cell, raised as an exception's message or stashed and printed in a later cell, it would
reach the student's feedback. This preprocessor runs on the feedback before HideHiddenTests
clears the hidden code: it takes the hidden lines of the instructor's test cells (those between
nbgrader's BEGIN/END HIDDEN TESTS in locked cells) that are long enough to say something and
appear neither in the cells' visible parts nor in the tests' own messages, and replaces every
output that contains one of them with a visible note (an error keeps its name; its message and
traceback become the note). A
test cell's own traceback, which quotes its hidden lines and which HideHiddenTests drops, is
not read: the failing check's message still reaches the student.

An output "contains" a line when, whitespace, case and terminal colours aside (a traceback that
runs through a hidden test's code quotes its lines, coloured), the line is in its text, in that
text with HTML entities or backslash escapes undone, reversed, in ROT13, or in any base64 or hex
run of it decoded (zlib-compressed or not), in any string of the output, metadata included; or
when the line runs across several outputs of the notebook, read in order (then every output of
the notebook is replaced). Widget state that quotes a line is dropped.

What remains possible: a student who encodes the source some other way (XOR, a cipher of their
own, pixels of an image, one character per cell with others in between, the timing of cells)
can still carry it out through the feedback; so can one who learns it a bit at a time (a score
that depends on it). The kernel's sandbox keeps the files of the course out of reach, not what
the kernel is given to run.

    c.GenerateFeedback.preprocessors = [..., "dlcourse.grading.redact.RedactHiddenSource",
                                        "dlcourse.grading.preprocessors.HideHiddenTests", ...]
"""
import ast
import base64
import binascii
import codecs
import functools
import html
import json
import re
import zlib

from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader import utils
from traitlets import Integer, Unicode

NOTE = "[removed from the feedback: this output quoted the hidden tests]"
_SPACE = re.compile(r"\s+")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")   # a traceback's colours split its source lines
_ESCAPES = re.compile(r"\\(?:[nrt'\"\\]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4})")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}){8,}")


def _norm(text: str) -> str:
    return _SPACE.sub("", text).casefold()


def _unescape(text: str) -> str:
    def one(m):
        try:
            return codecs.decode(m.group(0), "unicode_escape")
        except UnicodeDecodeError:
            return m.group(0)
    return _ESCAPES.sub(one, text)


def _decoded(text: str):
    """The text of every base64 or hex run in `text`, decoded (and decompressed where it is zlib)."""
    blobs = []
    for run in _BASE64.findall(text):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                blobs.append(decode(run + "=" * (-len(run) % 4)))
            except (binascii.Error, ValueError):
                pass
    blobs += [bytes.fromhex(run) for run in _HEX.findall(text)]
    for blob in blobs:
        yield blob.decode("latin-1")
        try:
            yield zlib.decompressobj().decompress(blob, 1 << 20).decode("latin-1")
        except zlib.error:
            pass


def views(text: str):
    """`text` as a student may have disguised it, each view whitespace-free and case-folded."""
    text = _ANSI.sub("", text)
    plain = html.unescape(text)
    for view in (text, plain, _unescape(plain)):
        yield _norm(view)
        yield _norm(view)[::-1]
        yield _norm(codecs.encode(view, "rot13"))
    for blob in _decoded(text):
        yield _norm(blob)


def _strings(value):
    """Every string in an output (its text, data, traceback, metadata), in order."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in sorted(value):
            yield from _strings(key)
            yield from _strings(value[key])
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@functools.lru_cache(maxsize=1024)
def _messages(source: str) -> str:
    """The text of every string literal in `source` (f-strings' fixed parts), normalized: what
    the tests' messages can say ('' where the cell is not plain Python). Kept per source: the
    locked cells are the same in every student's notebook, and the grader's workers inherit what
    the batch's process worked out (`remember_messages`)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return ""
    return _norm("\n".join(node.value for node in ast.walk(tree)
                            if isinstance(node, ast.Constant) and isinstance(node.value, str)))


def remember_messages(notebooks) -> None:
    """Work out `_messages` of every locked cell of the source `notebooks` (paths) once, before the
    batch forks its workers."""
    for path in notebooks:
        with open(path) as f:
            for cell in json.load(f).get("cells", []):
                if cell.get("cell_type") == "code":
                    _messages("".join(cell.get("source", "")))


def _hidden_lines(cells, begin: str, end: str, shortest: int) -> list[str]:
    """The hidden tests' lines (in the instructor's locked cells) worth redacting, normalized: long
    enough, not in any cell's visible source (the student has seen those, or written them), nor
    quoted by a test's own message (`opt_d.step()` in "expected one opt_d.step() ...")."""
    hidden, visible, said = set(), set(), []
    for cell in cells:
        locked = cell.cell_type == "code" and utils.is_locked(cell)
        said += [_messages(cell.source)] if locked else []
        inside = False
        for line in cell.source.splitlines():
            if locked and begin in line:
                inside = True
            elif locked and end in line:
                inside = False
            else:
                (hidden if inside else visible).add(_norm(line))
    return sorted(line for line in hidden - visible
                  if len(line) >= shortest and not any(line in message for message in said))


def _quotes(text: str, lines: list[str]) -> bool:
    return any(line in view for view in views(text) for line in lines)


def _redact(output, lines: list[str]) -> None:
    """Replace what `output` says with NOTE (an error keeps its name unless that quotes a line too)."""
    if output.get("output_type") == "error":
        if _quotes(output.get("ename", ""), lines):
            output["ename"] = "Error"
        output["evalue"] = NOTE
        output["traceback"] = [f"{output['ename']}: {NOTE}"]
    elif output.get("output_type") == "stream":
        output["text"] = NOTE + "\n"
    else:
        output["data"] = {"text/plain": NOTE}
        output["metadata"] = {}


class RedactHiddenSource(NbGraderPreprocessor):
    """Replace every output of the feedback that quotes a line of the hidden tests with a note."""

    begin_test_delimeter = Unicode("BEGIN HIDDEN TESTS", help="the line that opens hidden tests "
                                   "(nbgrader's ClearHiddenTests.begin_test_delimeter)").tag(config=True)
    end_test_delimeter = Unicode("END HIDDEN TESTS", help="the line that closes hidden tests "
                                 "(nbgrader's ClearHiddenTests.end_test_delimeter)").tag(config=True)
    shortest = Integer(10, help="a hidden line shorter than this many characters (spaces left out) is "
                       "not redacted: `else:` or `pass` tell nothing").tag(config=True)

    def preprocess(self, nb, resources):
        lines = _hidden_lines(nb.cells, self.begin_test_delimeter, self.end_test_delimeter, self.shortest)
        if not lines:
            return nb, resources
        # a test cell's own traceback quotes its hidden lines, and HideHiddenTests drops it: its
        # error counts by name and message only (the failing check's message must reach the student)
        scanned = [(o, {k: v for k, v in o.items() if k != "traceback" or self.begin_test_delimeter not in cell.source})
                   for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
        outputs = [o for o, _ in scanned]
        hits = [_quotes("\n".join(_strings(fields)), lines) for _, fields in scanned]
        shown = "".join(str(o.get("text", "")) + str(o.get("evalue", "")) + str(o.get("data", {}).get("text/plain", ""))
                        for o in outputs)
        if not any(hits) and _quotes(shown, lines):   # one line cut into pieces, printed in turn
            hits = [True] * len(outputs)
        for output, hit in zip(outputs, hits):
            if hit:
                _redact(output, lines)
        if any(hits):
            self.log.warning("Removed %d outputs that quoted the hidden tests", sum(hits))
        widgets = nb.metadata.get("widgets")
        if widgets is not None and _quotes(json.dumps(widgets), lines):
            del nb.metadata["widgets"]
        return nb, resources
