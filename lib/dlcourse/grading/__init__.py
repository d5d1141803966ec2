"""Shared: instructor-side tools around nbgrader: grading plug-ins and the batch grader.

    python -m dlcourse.grading --assignment ps_convolution --submissions export.zip

Laid out as the path of one submission; each module's docstring opens with its step:

    intake   submissions (the LMS export, checked), plan (stored, validated, scanned: a Job each)
    cage     cage (bubblewrap, rlimits, scratch tmpfs, kernel uids), cgroups, _kernel_stage, _sandbox_anchor
    run      runner (slots, budgets), worker (one student's autograde), sandbox (the Execute),
             kernel_manager, kernel_template, output_cap, integrity, kernel_checks,
             kernel_library, timelimits,
             nbgrader_patches, worker_process, cluster (the same on Dask)
    render   feedback, preprocessors, redact, sanitize, part_results, awaiting, mathml, rubric,
             report, charts, similarity
    record   record (an Outcome into the student's Row), state (state.json and its log)
    shared   settings (Settings), outcome (Job, Outcome, Failure, Row), batch (grade_batch), cli
"""
