"""nbgrader preprocessors used by the course's `nbgrader_config.py`.

HideHiddenTests runs while feedback is generated: it removes hidden test code from
test cells (like nbgrader's ClearHiddenTests) *and* shortens the traceback of a failed
test cell that ran hidden tests, because a traceback quotes the failing source line.
The student still sees which part failed and the assertion's message.
"""
from nbgrader.preprocessors import ClearHiddenTests

HIDDEN_NOTE = "(the rest of this test cell is hidden; the message above says what went wrong)"


class HideHiddenTests(ClearHiddenTests):
    """ClearHiddenTests for feedback: hidden test code leaves no trace, not even in tracebacks."""

    # A student may paste the delimiter into their own cell; that must not stop feedback.
    enforce_metadata = False

    def preprocess_cell(self, cell, resources, cell_index):
        had_hidden = self.begin_test_delimeter in cell.source
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if had_hidden and cell.cell_type == "code":
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}", HIDDEN_NOTE]
        return cell, resources
