# BIANet course: environment, tests, notebooks, lint.
# `make test` is the one command CI runs (.ci/run) and the README documents.

PYTHON_BOOT ?= python3.11
VENV        := .venv
PY          := $(VENV)/bin/python
STAMP       := $(VENV)/.bianet-installed

.PHONY: venv test course lint

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

course: venv
	$(VENV)/bin/bianet course run --notebooks-dir notebooks

lint: venv
	$(VENV)/bin/ruff check bianet_lib tests notebooks
