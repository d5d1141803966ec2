"""What the notebook's Validate button says: one line per part, not the tests' source.

nbgrader's Validator reports every failing test cell with its whole source and traceback: for a
problem set just fetched, about 8 KB of test code for parts the student has not started. `summarize`
rewrites its result as one line per part that needs work, from the problem set's headings
("## Part 2 — 2-D cross-correlation (2 points)"): a part whose answer cells still hold the
release's stub, or whose tests stop at its NotImplementedError, reads "Part 2 not answered yet
(2-D cross-correlation)" (written answers too, which nbgrader does not check), and a failing
visible check gives its message alone ("Part 3 (output size): AssertionError: ...", the
exception's line and its text, no traceback).

The JupyterLab server extension `dlcourse.validate` serves nbgrader's Validate handler with that
summary; the hub enables it in place of `nbgrader.server_extensions.validate_assignment`
(hub/config/common/jupyter_server_config.json). Nothing else changes: the same nbgrader Validator
runs the notebook, and "changed" or "type changed" results come through as they are.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

PART_HEADING = re.compile(r"^#{1,6}\s*(Parts?\s+\d[\d ,+and]*?)\s*[—–·:-]\s*(.+?)\s*(?:\([^()]*points?[^()]*\))?\s*$",
                          re.M)
STUBS = ("raise NotImplementedError()", "YOUR ANSWER HERE")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b:?")
LONGEST_MESSAGE = 300
NEXT_STEP = ("Finish these parts and press Validate again.\n"   # the dialog does not wrap lines
             "Validate runs the visible checks; the hidden tests decide the points once you submit.")


@dataclass
class Part:
    """A part of a problem set: its label ("Part 2"), its title, and the indices of its cells."""
    label: str
    title: str
    cells: list[int]


def parts(nb) -> list[Part]:
    """The notebook's parts, in order, each from its heading up to the next part's heading; cells
    before the first heading belong to no part."""
    found: list[Part] = []
    for i, cell in enumerate(nb.cells):
        heading = PART_HEADING.search(cell.source) if cell.cell_type == "markdown" else None
        if heading:
            found.append(Part(" ".join(heading.group(1).split()), heading.group(2), []))
        if found:
            found[-1].cells.append(i)
    return found


def is_unanswered(cell) -> bool:
    """A student's answer cell that still holds the release's stub."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("solution")) and any(stub in cell.source for stub in STUBS)


def short_error(raw_error: str) -> str:
    """The failing check's message: from the traceback's last exception line to the end (ANSI
    colours removed), at most LONGEST_MESSAGE characters."""
    lines = [line.rstrip() for line in ANSI.sub("", raw_error).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if ERROR_LINE.match(line)]
    message = " ".join(lines[starts[-1]:] if starts else lines[-1:])
    return message if len(message) <= LONGEST_MESSAGE else message[:LONGEST_MESSAGE - 3] + "..."


def summarize(results: dict, nb) -> dict:
    """nbgrader's Validator result for `nb` with its 'failed' list rewritten as one item (the dialog
    heads each item "The following cell failed:"): a line per part that needs work, then what to do;
    other results are returned as they are."""
    if "type_changed" in results or "changed" in results or "passed" in results:
        return results
    failed = {item["source"]: item for item in results.get("failed", [])}
    unknown = dict(failed)
    lines = []
    for part in parts(nb):
        cells = [nb.cells[i] for i in part.cells]
        errors = [failed[c.source.strip()]["raw_error"] for c in cells if c.source.strip() in failed]
        for c in cells:
            unknown.pop(c.source.strip(), None)
        if any(is_unanswered(c) for c in cells) or any("NotImplementedError" in e for e in errors):
            lines.append(f"{part.label} not answered yet ({part.title})")
        else:
            lines += [f"{part.label} ({part.title}): {short_error(e)}" for e in errors]
    lines += [f"a test outside the parts: {short_error(item['raw_error'])}" for item in unknown.values()]
    rest = {k: v for k, v in results.items() if k != "failed"}
    if not lines:
        return rest
    return {**rest, "failed": [{"source": "\n".join(lines), "error": html.escape(NEXT_STEP), "raw_error": NEXT_STEP}]}


def _jupyter_server_extension_points():
    return [{"module": "dlcourse.validate"}]


def _load_jupyter_server_extension(server_app) -> None:
    """nbgrader's Validate service (its two URLs) with the summary above."""
    from jupyter_server.utils import url_path_join
    from nbgrader.server_extensions.validate_assignment.handlers import ValidateAssignmentHandler, default_handlers

    class PartValidateHandler(ValidateAssignmentHandler):
        def validate_notebook(self, path):
            result = super().validate_notebook(path)   # checks that `path` lies under the server's root
            if result.get("success") and isinstance(result.get("value"), dict):
                nb = nbformat.read(Path(self.root_dir).resolve() / path, as_version=4)
                result["value"] = summarize(result["value"], nb)
            return result

    web_app = server_app.web_app
    web_app.settings["root_dir"] = server_app.root_dir   # as nbgrader's own loader sets it
    base = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base, pattern), PartValidateHandler
                                  if handler is ValidateAssignmentHandler else handler)
                                 for pattern, handler in default_handlers])
    server_app.log.info("dlcourse.validate: the Validate button reports part by part")
