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

# The demo searches this host (no --target: the probed host, so bf16 only where the CPU has AVX512-BF16/AMX) for
# digits-cnn: real weights, 540 held-out test digits, the cnn space (no pruning without distillation), three
# objectives: latency of a call, samples/s and quality loss, so the front shows the trade-off a CNN deployment makes
# (batch 1 for latency, a large batch for throughput; with latency and quality alone every lossless deployment ties
# on quality and the single fastest one is the whole front).  The space's seeds are measured first, cheap ones first
# (OpenVINO fp32 and NNCF int8 at batch 1 and at a sampled batch, ONNX Runtime static int8), the pruned+distilled
# student last, at batch 8, 1 and 64 (trained once, then loaded from the student cache).  Distillation runs in
# stages and stops a student that cannot reach the bound; a region a measured trial showed hopeless is not measured
# again.  No trial starts once what is left of the 4 minutes is needed to re-measure
# the winner, so the run, re-measurement included, ends in about 4-5 minutes on 2 cores (measured: 4.1 min on a
# quiet 2-core Xeon, experiments/results/demo-2026-12-06.md; 3.0-3.4 min and a front of 3 on a 2-core AVX2 EPYC,
# experiments/results/demo-2026-12-07-avx2.md).
demo: install
	$(BIN)/planner optimize --model digits-cnn --space cnn --trials 20 --timeout 240 --objectives latency,throughput,quality

# The default suite (not slow, not gpu) in two passes: two tests at a time (pytest-xdist, a file per worker),
# then the `serial` ones alone (tests/conftest.py SERIAL: they time real work or load every core).
test: install
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow and not gpu and not serial"
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest -m "serial and not slow and not gpu"

test-all: install
	MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true $(BIN)/python -m pytest -m "not gpu"

bench: install
	$(BIN)/python experiments/bench_baselines.py

clean:
	rm -rf .planner build *.egg-info
