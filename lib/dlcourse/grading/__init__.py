"""Instructor-side tools around nbgrader: grading plug-ins and the batch grader.

    python -m dlcourse.grading --assignment ps_convolution --submissions export.zip

    submissions   read an LMS export, validate notebooks before they run
    sandbox       bubblewrap + rlimits + unprivileged uid for the grading kernel
    integrity     flag submissions that touch grading hooks (static scan and runtime check)
    batch         parallel workers, budgets, resumable state
    report        grades.csv, histogram and failing-test fractions (PNG and HTML)
    preprocessors feedback without hidden tests
"""
