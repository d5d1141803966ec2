# Course tasks. `make lab` and `make test` are all a newcomer needs; both install first.
#   make lab                      install into .venv (if needed) and start JupyterLab on the course
#   make test                     install (if needed) and run every test
#   make release                  regenerate exercises/ from solutions/ (nbgrader generate_assignment)
#   make autograde ASSIGNMENT=..  grade everything under submitted/ for one assignment
#   make feedback ASSIGNMENT=..   write feedback/ HTML for the graded submissions
#   make grade ASSIGNMENT=.. SUBMISSIONS=export.zip
#                                 the whole batch: register, sandboxed parallel autograde,
#                                 feedback, grades/<assignment>/grades.csv and report.html
#   make outputs                  re-execute lectures and solutions to refresh stored outputs

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NBGRADER := $(BIN)/nbgrader
ASSIGNMENTS := $(notdir $(wildcard solutions/ps_*))
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PYTEST_ARGS ?=
# nbgrader calls `alembic` (and the kernel `python`) by name: put the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lab test release autograde feedback grade outputs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)" $(ROOT_FLAG) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg \
	  tests lectures solutions $(PYTEST_ARGS)

release: $(STAMP)
	@for a in $(ASSIGNMENTS); do $(NBGRADER) generate_assignment $$a --force || exit 1; done

autograde: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make autograde ASSIGNMENT=ps_convolution"; exit 2; }
	$(NBGRADER) generate_assignment $(ASSIGNMENT) --force
	$(NBGRADER) autograde $(ASSIGNMENT) --force

feedback: $(STAMP)
	@test -n "$(ASSIGNMENT)" || { echo "usage: make feedback ASSIGNMENT=ps_convolution"; exit 2; }
	$(NBGRADER) generate_feedback $(ASSIGNMENT) --force

grade: $(STAMP)
	@test -n "$(ASSIGNMENT)" -a -n "$(SUBMISSIONS)" || { echo "usage: make grade ASSIGNMENT=ps_convolution SUBMISSIONS=export.zip [GRADE_ARGS='--workers 4']"; exit 2; }
	$(BIN)/dlcourse-grade --assignment $(ASSIGNMENT) --submissions $(SUBMISSIONS) $(GRADE_ARGS)

outputs: $(STAMP)
	$(BIN)/python -m dlcourse.notebooks execute lectures/*.ipynb solutions/*/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis gradebook.db
