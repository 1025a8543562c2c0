# BIANet course: environment, tests, notebooks, lint.
# `make test` is the one command CI runs (.ci/run) and the README documents.

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.bianet-installed

BIANET      := $(VENV)/bin/bianet
COURSE_RUNS := results/course

.PHONY: venv test course course-runs experiments lint

venv: $(STAMP)

# (Re)install when the venv is missing or pyproject.toml is newer than the stamp.
# torch/torchvision come from local disk through the machine's pip constraints.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet -e .
	@$(PY) -c "from jupyter_client.kernelspec import KernelSpecManager as K; import sys; sys.exit(0 if K().find_kernel_specs().get('python3','').startswith(sys.prefix) else 1)" \
	  || $(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3"
	@touch $(STAMP)

test: venv
	$(PY) -m pytest -q --durations=15 tests/

# The course's main job: retrain the two course runs the notebooks read, then execute every
# notebook in order (papermill, in place), regenerating figures/.
course: course-runs
	$(BIANET) course run --notebooks-dir notebooks

course-runs: venv
	rm -f $(COURSE_RUNS)/bianet-cpu-small/latest.pt $(COURSE_RUNS)/baseline-cpu-small/latest.pt
	$(BIANET) train --preset cpu-small --no-progress --run-dir $(COURSE_RUNS)/bianet-cpu-small
	$(BIANET) train --preset cpu-small --no-progress --set use_pia=false --set use_nia=false \
	  --run-dir $(COURSE_RUNS)/baseline-cpu-small

# An experiment grid of notebook 07 (resumable; finished runs are kept): `make experiments`
# runs the reduced CPU grid, `make experiments GRID=full` every experiment.
GRID ?= reduced
experiments: venv
	$(BIANET) experiments $(GRID)

lint: venv
	$(VENV)/bin/ruff check bianet_lib tests notebooks
