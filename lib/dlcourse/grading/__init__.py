"""Instructor-side tools around nbgrader (grading plug-ins, the batch grader)."""
