# BIANet course: environment, tests, notebooks, lint.
# `make test` is the one command CI runs (.ci/run) and the README documents.

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.bianet-installed

BIANET      := $(VENV)/bin/bianet
COURSE_RUNS := results/course

.PHONY: venv lab test course course-runs verify-course experiments lint gpu-check

SHELL := /bin/bash
# The course runs pin their thread count: torch's default is the number of cores, and float
# sums in another order give other bits. The two runs train at once with 1 thread each (one per
# core of the 2-core reference machine); bit-identical results need the same count
# (and CPU type and torch build; see docs/reliability.md).
COURSE_THREADS ?= 1
# $(call timed,LABEL,COMMAND): run COMMAND, then print its wall time
timed = start=$$(date +%s); $(2) && echo "== $(1): $$(( $$(date +%s) - start )) s wall"

venv: $(STAMP)

# (Re)install when the venv is missing or pyproject.toml is newer than the stamp.
# torch/torchvision come from local disk through the machine's pip constraints.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[pinned]"
	@$(PY) -c "from jupyter_client.kernelspec import KernelSpecManager as K; import sys; sys.exit(0 if K().find_kernel_specs().get('python3','').startswith(sys.prefix) else 1)" \
	  || $(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3"
	@touch $(STAMP)

# The README's first command: the venv (made once), then the course's first notebook in JupyterLab.
# Jupyter refuses to run as root without --allow-root (containers often are root); LAB_ARGS adds more.
LAB_ARGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: venv
	$(VENV)/bin/jupyter lab $(LAB_ARGS) notebooks/00_course_map_and_data.ipynb

test: venv
	$(PY) -m pytest -q --durations=15 tests/

# The course's main job: retrain the two course runs the notebooks read (and their diagnose
# reports), then execute every notebook in order (papermill, in place), regenerating figures/.
course: course-runs
	@$(call timed,notebooks (papermill; each notebook's time above),$(BIANET) course run --notebooks-dir notebooks)

course-runs: venv
	mkdir -p $(COURSE_RUNS)
	@# the world once (cached), before two trainers would both generate it
	$(PY) -c "from bianet_lib.config import load_config; from bianet_lib.data.sources import load_world; load_world(load_config('cpu-small'))"
	@$(call timed,train bianet-cpu-small and baseline-cpu-small (in parallel),\
	  $(BIANET) train --preset cpu-small --no-progress --set num_threads=$(COURSE_THREADS) \
	    --overwrite --run-dir $(COURSE_RUNS)/bianet-cpu-small > $(COURSE_RUNS)/.bianet.log 2>&1 & a=$$!; \
	  $(BIANET) train --preset cpu-small --no-progress --set num_threads=$(COURSE_THREADS) \
	    --set use_pia=false --set use_nia=false --overwrite --run-dir $(COURSE_RUNS)/baseline-cpu-small \
	    > $(COURSE_RUNS)/.baseline.log 2>&1 & b=$$!; \
	  wait $$a; ra=$$?; wait $$b; rb=$$?; tail -n 4 $(COURSE_RUNS)/.bianet.log $(COURSE_RUNS)/.baseline.log; \
	  rm -f $(COURSE_RUNS)/.bianet.log $(COURSE_RUNS)/.baseline.log; test $$ra = 0 && test $$rb = 0)
	@# is each part alive: the diagnose reports the notebooks and the README read (diagnose-best.json)
	@$(call timed,bianet diagnose of both course runs,\
	  $(BIANET) diagnose --run-dir $(COURSE_RUNS)/bianet-cpu-small > /dev/null && \
	  $(BIANET) diagnose --run-dir $(COURSE_RUNS)/baseline-cpu-small > /dev/null)

# The regeneration check a maintainer runs before committing results: retrain the course runs
# into a temporary folder, re-execute every notebook on them there, and compare every number of
# results.json / metrics.jsonl, the weights and every printed number with the committed ones
# (TOLERANCE=0 by default: bit-identical on the reference machine type). Touches nothing here.
TOLERANCE ?= 0
verify-course: venv
	@dir=$$(mktemp -d "$${TMPDIR:-/tmp}/bianet-verify-XXXXXX"); echo "== fresh runs and notebooks in $$dir"; \
	$(MAKE) --no-print-directory course-runs COURSE_RUNS=$$dir/runs && \
	$(call timed,verify,$(BIANET) course verify --runs $$dir/runs --work-dir $$dir --tolerance $(TOLERANCE))

# The experiment grid of notebook 07 (resumable; finished runs are kept): `make experiments` runs
# the test-bed's reduced grid (baseline, BIANet, control, 3 seeds), `make experiments GRID=testbed`
# all five arms and 5 seeds; the first version's grids (`GRID=reduced`, `full`) stay runnable.
GRID ?= testbed-reduced
experiments: venv
	$(BIANET) experiments $(GRID)

lint: venv
	$(VENV)/bin/ruff check bianet_lib tests notebooks

# The one prepared GPU check (docs/gpu-and-real-data.md): about 8 minutes on one H100;
# writes its JSON report under results/gpu/ (and $OUT on the lent device machine).
gpu-check:
	bash scripts/gpu_check.sh
