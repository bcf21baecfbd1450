# Every target sets itself up: `make demo` and `make test` work on a fresh machine and
# skip what is already installed on the second run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, alone: on machines with a local wheel store pip takes it from disk.
# Every specifier is quoted: an unquoted >= is a shell redirection.
TORCH_SPEC ?= 'torch>=2.4' 'torchvision>=0.19'
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
INSTALLED := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install detectron2 data lint format test test-fast demo bench clean

help:
	@echo "make demo        set up everything, then run the main job (simsiam-hub demo)"
	@echo "make test        set up everything, then lint and run the test suite"
	@echo "make test-fast   the suite without the slow end-to-end tests (the edit-test loop)"
	@echo "make lint        ruff's linter and formatter check; make format applies the formatter"
	@echo "make install     the virtual environment with simsiam-hub and all its extras (train, detection, data, dev)"
	@echo "make detectron2  detectron2 for the transfer scripts (skipped if it imports)"
	@echo "make data        Fashion-MNIST from the Debian package (where apt exists)"
	@echo "make bench       the benchmarks under bench/"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Re-installs only when pyproject.toml changes.
$(INSTALLED): pyproject.toml | $(PY)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install $(TORCH_SPEC)
	$(PY) -m pip install -e '.[train,detection,data,dev]'
	touch $@

install: $(INSTALLED)

# detectron2 has no official wheel. An upstream build already in the venv is kept;
# otherwise the sal-detectron2 wheel (upstream a59f0563) goes in without its deps,
# which the `detection` extra already installed.
detectron2: $(INSTALLED)
	@if $(PY) -c "import detectron2.modeling" 2>/dev/null; then \
	  echo "detectron2: already installed"; \
	else \
	  SP=$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
	  $(PY) -m pip install --no-deps --only-binary=:all: --python-version 3.10 \
	    --target "$$SP" --upgrade sal-detectron2==0.7.2 && \
	  $(PY) -c "import detectron2.modeling; print('detectron2: installed', detectron2.__version__)"; \
	fi

data:
	@if [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then \
	  echo "Fashion-MNIST: found in $(FMNIST_DIR)"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	else \
	  echo "Fashion-MNIST: not in $(FMNIST_DIR); pass --data or data.root=DIR (torchvision downloads it where there is network)"; \
	fi

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(INSTALLED)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Two workers (pytest-xdist), a test file each at a time, one thread each: most tests are
# single-threaded or run their own processes. `PYTEST_ARGS="-n 0"` runs them in one process.
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=15

test: install detectron2 data lint
	$(PYTEST) $(PYTEST_ARGS)

test-fast: install detectron2 data lint
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

demo: install detectron2 data
	$(VENV)/bin/simsiam-hub demo

bench: install
	$(PY) bench/load_time.py
	$(PY) bench/pretrain_throughput.py

clean:
	rm -rf $(VENV) runs demo_out .pytest_cache
