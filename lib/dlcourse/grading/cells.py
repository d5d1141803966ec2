"""Shared: the kinds of nbgrader cells the grader tells apart, each rule written once.

    is_autograded_test(cell)   a code cell nbgrader scores by running it (grade, no solution)
    is_graded_by_hand(cell)    a written answer a person scores (grade and solution)
"""


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_autograded_test(cell) -> bool:
    """nbgrader's 'Autograder tests': a graded code cell that is not an answer."""
    meta = _nbgrader(cell)
    return cell.get("cell_type") == "code" and bool(meta.get("grade")) and not meta.get("solution")


def is_graded_by_hand(cell) -> bool:
    """A cell a person grades: nbgrader's 'Manually graded answer' (grade and solution)."""
    meta = _nbgrader(cell)
    return bool(meta.get("grade") and meta.get("solution"))
