"""Render: nbgrader preprocessors used by the course's `nbgrader_config.py`.

HideHiddenTests runs while feedback is generated: it removes hidden test code from
test cells (like nbgrader's ClearHiddenTests), and a test cell that ran hidden tests shows
nothing of that run but its error's name and message: no traceback (it quotes the failing
source line) and no output printed or displayed while the cell ran (student code called by
the tests can read the cell's source from inside the kernel and print it). The student still
sees which part failed and the assertion's message; RedactHiddenSource (redact.py) runs
before it and removes any output, in any cell, that quotes the hidden tests, that message included.
"""
from nbgrader.preprocessors import ClearHiddenTests

HIDDEN_NOTE = "(the rest of this test cell is hidden; the message above says what went wrong)"


class HideHiddenTests(ClearHiddenTests):
    """ClearHiddenTests for feedback: hidden test code leaves no trace, not even in tracebacks or
    in what the cell printed."""

    # A student may paste the delimiter into their own cell; that must not stop feedback.
    enforce_metadata = False

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = self.begin_test_delimeter in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_hidden and cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            for output in cell.outputs:
                output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}", HIDDEN_NOTE]
        return cell, resources
