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
#   make site                     the lectures as a static web site in site/ (stored outputs, offline)
#   make slides                   every lecture as a reveal.js deck in slides/ (offline; open slides/index.html)
#   make hub HUB_INSTRUCTOR=.. HUB_STUDENTS='..'
#                                 JupyterHub for the course on this server (as root): PAM logins,
#                                 the nbgrader exchange, formgrader for the instructor

# The newest Python 3.11-3.13 found on PATH (each candidate is run, not just looked up);
# `make PYTHON=/path/to/python3.12 ...` overrides. An existing .venv is reused as it is.
PYTHON_CANDIDATES := python3.13 python3.12 python3.11 python3 python
ifeq ($(origin PYTHON),undefined)
PYTHON := $(shell for p in $(PYTHON_CANDIDATES); do \
  $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 \
  && { command -v $$p; break; }; done)
endif
# pytest workers: one per core, at least 2 (notebooks run in parallel, one file per worker)
JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -lt 2 ] && n=2; echo $$n)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NBGRADER := $(BIN)/nbgrader
ASSIGNMENTS := $(notdir $(wildcard solutions/ps_*))
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PYTEST_ARGS ?=
# nbgrader calls `alembic` (and the kernel `python`) by name: put the venv first on PATH.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: install lab test release autograde feedback grade outputs site slides slides-assets hub hub-proxy clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { \
	  echo "error: the course needs Python 3.11, 3.12 or 3.13, and none was found on PATH"; \
	  echo "       (tried: $(PYTHON_CANDIDATES)). Install one, or point make at it:"; \
	  echo "       make PYTHON=/path/to/python3.12 $(MAKECMDGOALS)"; exit 1; }
	@test -x $(BIN)/python || { echo "creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

# JupyterLab's settings ship with the course (jupyter/lab/settings/overrides.json: no news pop-up,
# Markdown opens rendered); its state (workspaces, runtime files, caches) stays in .jupyter-state/,
# so nothing is written into the home directory. It opens on START.md.
LAB_STATE := $(CURDIR)/.jupyter-state
LAB_ENV := env JUPYTER_CONFIG_DIR="$(LAB_STATE)/config" JUPYTER_DATA_DIR="$(LAB_STATE)/data" JUPYTER_RUNTIME_DIR="$(LAB_STATE)/runtime" IPYTHONDIR="$(LAB_STATE)/ipython" npm_config_cache="$(LAB_STATE)/npm"
LAB_SETTINGS := --LabApp.app_settings_dir="$(CURDIR)/jupyter/lab/settings" --LabApp.user_settings_dir="$(LAB_STATE)/lab/user-settings" --LabApp.workspaces_dir="$(LAB_STATE)/lab/workspaces" --LabApp.default_url=/lab/tree/START.md

lab: $(STAMP)
	$(LAB_ENV) $(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir="$(CURDIR)" $(LAB_SETTINGS) $(ROOT_FLAG) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) --dist loadfile \
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

# The lectures as a static HTML site (Sphinx + MyST-NB, website/conf.py): stored outputs, nothing executed.
SITE ?= site
site: $(STAMP)
	$(BIN)/python -m sphinx -b html -q -E -c website . "$(SITE)"
	@echo "open $(SITE)/index.html"

# The lectures as reveal.js decks (nbconvert's slides exporter; each cell's slide type is in its
# metadata: `python -m dlcourse.slides outline lectures/*.ipynb` shows them). reveal.js, MathJax 2,
# require.js and jQuery come from npm, pinned, into .venv/slides and are copied beside the decks,
# so $(SLIDES)/ opens from file:// with no network. Live slides with code running: RISE in `make lab`.
SLIDES ?= slides
SLIDES_NPM := reveal.js@5.2.1 mathjax@2.7.9 requirejs@2.3.7 jquery@3.7.1
SLIDES_NODE_MODULES := $(VENV)/slides/node_modules
SLIDES_ASSETS := $(VENV)/slides/.installed-$(subst @,-,$(subst $(eval) ,+,$(SLIDES_NPM)))

slides-assets: $(SLIDES_ASSETS)

$(SLIDES_ASSETS):
	@$(NEED_NPM)
	npm install --prefix $(VENV)/slides --save-exact --no-audit --no-fund --loglevel=error --cache $(VENV)/slides/.npm-cache $(SLIDES_NPM)
	@touch $@

slides: $(STAMP) $(SLIDES_ASSETS)
	$(BIN)/python -m dlcourse.slides export --assets $(SLIDES_NODE_MODULES) --out "$(SLIDES)" lectures/*.ipynb

# npm (for the hub's proxy and the decks' scripts): Debian's nodejs and npm, installed if missing (as root).
NEED_NPM = command -v npm >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get install -y -q --no-install-recommends nodejs npm || { apt-get update -q && apt-get install -y -q --no-install-recommends nodejs npm; }; \
	  else echo "error: this needs node and npm: apt-get install nodejs npm (as root)"; exit 1; fi; }

# JupyterHub for a class on one server (hub/jupyterhub_config.py, dlcourse.hub documents each setting).
# Its proxy comes from npm, pinned, into .venv/hub; Debian's nodejs and npm are installed if missing.
CHP_VERSION := 5.3.0
CHP := $(VENV)/hub/node_modules/.bin/configurable-http-proxy
HUB_PORT ?= 8000
HUB_IP ?= 127.0.0.1
HUB_INSTRUCTOR ?=
HUB_STUDENTS ?=
HUB_ROSTER ?=
HUB_COURSE_DIR ?= $(CURDIR)
HUB_STATE ?= $(CURDIR)/.hub-state
HUB_EXCHANGE ?= /srv/nbgrader/exchange

hub-proxy: $(CHP)

$(CHP):
	@$(NEED_NPM)
	npm install --prefix $(VENV)/hub --no-audit --no-fund --loglevel=error --cache $(VENV)/hub/.npm-cache configurable-http-proxy@$(CHP_VERSION)
	@touch $@

hub: $(STAMP) $(CHP)
	@test "$$(id -u)" = 0 || { echo "error: make hub runs as root: it starts each user's server as that Unix user"; exit 1; }
	env DLCOURSE_HUB_INSTRUCTOR="$(HUB_INSTRUCTOR)" DLCOURSE_HUB_STUDENTS="$(HUB_STUDENTS)" \
	  DLCOURSE_HUB_ROSTER="$(HUB_ROSTER)" DLCOURSE_HUB_PORT="$(HUB_PORT)" DLCOURSE_HUB_IP="$(HUB_IP)" \
	  DLCOURSE_HUB_COURSE_DIR="$(HUB_COURSE_DIR)" DLCOURSE_HUB_STATE="$(HUB_STATE)" DLCOURSE_EXCHANGE="$(HUB_EXCHANGE)" \
	  $(BIN)/jupyterhub -f hub/jupyterhub_config.py $(HUB_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis gradebook.db .jupyter-state .hub-state site slides
