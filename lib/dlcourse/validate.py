"""What the notebook's Validate button says: one line per part, not the tests' source.

nbgrader's Validator reports every failing test cell with its whole source and traceback: for a
problem set just fetched, about 8 KB of test code for parts the student has not started. `summarize`
rewrites its result part by part, from the problem set's headings ("## Part 2 — 2-D
cross-correlation (2 points)"): a part whose answer cells still hold the release's stub, or whose
tests stop at its NotImplementedError, reads "Part 2 not answered yet (2-D cross-correlation)"
(written answers too, which nbgrader does not check), and a failing visible check gives its
message alone (the check's last line, the exception and its text).

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


def entry(text: str, message: str = "") -> dict:
    """One item of the Validate dialog (nbgrader's 'failed' format: source, error, raw_error)."""
    return {"source": text, "error": html.escape(message), "raw_error": message}


def summarize(results: dict, nb) -> dict:
    """nbgrader's Validator result for `nb` with its 'failed' list rewritten part by part (see
    above); other results are returned as they are."""
    if "type_changed" in results or "changed" in results or "passed" in results:
        return results
    failed = {item["source"]: item for item in results.get("failed", [])}
    unknown = dict(failed)
    summary = []
    for part in parts(nb):
        cells = [nb.cells[i] for i in part.cells]
        errors = [failed[c.source.strip()]["raw_error"] for c in cells if c.source.strip() in failed]
        for c in cells:
            unknown.pop(c.source.strip(), None)
        if any(is_unanswered(c) for c in cells) or any("NotImplementedError" in e for e in errors):
            summary.append(entry(f"{part.label} not answered yet ({part.title})"))
        elif errors:
            summary += [entry(f"{part.label} ({part.title}): a check failed", short_error(e)) for e in errors]
    summary += [entry("A test outside the problem set's parts failed", short_error(item["raw_error"]))
                for item in unknown.values()]
    return {**{k: v for k, v in results.items() if k != "failed"}, **({"failed": summary} if summary else {})}


def _jupyter_server_extension_points():
    return [{"module": "dlcourse.validate"}]


def _load_jupyter_server_extension(server_app) -> None:
    """nbgrader's Validate service (its two URLs) with the summary above."""
    from jupyter_server.utils import url_path_join
    from nbgrader.server_extensions.validate_assignment.handlers import (NbGraderVersionHandler,
                                                                          ValidateAssignmentHandler)

    class PartValidateHandler(ValidateAssignmentHandler):
        def validate_notebook(self, path):
            result = super().validate_notebook(path)   # checks that `path` lies under the server's root
            if result.get("success") and isinstance(result.get("value"), dict):
                nb = nbformat.read(Path(self.root_dir).resolve() / path, as_version=4)
                result["value"] = summarize(result["value"], nb)
            return result

    web_app = server_app.web_app
    base = web_app.settings["base_url"]
    web_app.add_handlers(".*$", [(url_path_join(base, "assignments/validate"), PartValidateHandler),
                                 (url_path_join(base, "nbgrader_version"), NbGraderVersionHandler)])
    server_app.log.info("dlcourse.validate: the Validate button reports part by part")
