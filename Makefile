# One-command set-up: `make demo` (install + a real study) and `make test` (install + the test suite).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
EXTRAS  ?= compress,tvm,openvino,postgres,data,minilm,hf,test
STAMP   := $(VENV)/.installed

.PHONY: install demo test test-all bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU wheel of torch 2.13.0 (a looser pin would pull a multi-GB CUDA build)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/planner optimize --model resnet18 --target targets/cpu.yaml --trials 30

test: install
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest

test-all: install
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest -m "not gpu"

bench: install
	$(BIN)/python experiments/bench_baselines.py

clean:
	rm -rf .planner build *.egg-info
