"""Shared: python -m dlcourse.grading: the batch grader (see dlcourse.grading.cli)."""
import sys

from dlcourse.grading.cli import main

sys.exit(main())
