#!/usr/bin/env bash
# One command on an NVIDIA GPU host (no internet needed): record the environment, `planner probe`
# the GPU, run a short study of resnet18 and bert-mini on search_spaces/gpu.yaml against the probed
# target, run the `gpu` test suite, and keep everything in experiments/results/gpu-<date>-<time>/.
#
#   experiments/run_gpu.sh                       # defaults below
#   TRIALS=20 MODELS="resnet18" experiments/run_gpu.sh
#   ALLOW_CPU=1 MODELS=tiny-mlp TRIALS=2 experiments/run_gpu.sh   # plumbing check on a CPU host (no results)
#
# Wheels the host lacks (a CUDA build of torch, onnxruntime-gpu, tensorrt, ...) travel with the
# repository in experiments/wheels/ (or WHEELS=DIR) and are installed from there, never from an
# index: see experiments/README.md ("GPU run").  Every step runs even when an earlier one failed
# (except when there is no usable GPU); steps.tsv lists each step's exit code.
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
MODELS=${MODELS:-"resnet18 bert-mini"}
TRIALS=${TRIALS:-12}                   # trials per model: a smoke run of the search, not a benchmark
STUDY_TIMEOUT=${STUDY_TIMEOUT:-2400}   # seconds per study before no new trial starts
TRIAL_TIMEOUT=${TRIAL_TIMEOUT:-900}    # seconds per candidate (max-autotune and TensorRT level 5 are slow)
TVM_BUDGET=${TVM_BUDGET:-900}          # total MetaSchedule tuning seconds per study
WHEELS=${WHEELS:-experiments/wheels}
STAMP=$(date +%Y-%m-%d-%H%M%S)
OUT=${OUT:-experiments/results/gpu-$STAMP}
STATE=${STATE:-experiments/.bench-home/gpu-$STAMP}   # planner home (Optuna/MLflow/engines; git-ignored)

export PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
mkdir -p "$OUT" "$STATE"
OUT=$(cd "$OUT" && pwd)
printf 'step\texit_code\tseconds\n' > "$OUT/steps.tsv"
FAILED=0

step() {  # step NAME LOGFILE CMD...: run, tee its output, record the exit code
  local name=$1 log=$2; shift 2
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$OUT/run.log"
  "$@" > >(tee "$OUT/$log") 2>&1
  local rc=$?
  wait
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" >> "$OUT/steps.tsv"
  echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/run.log"
  [ "$rc" -eq 0 ] || FAILED=1
  return "$rc"
}

# ------------------------------------------------------------------ 0. wheels that travelled with the repo
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
if [ ! -x "$PY" ]; then
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "no $PY and no wheels in $WHEELS: create the venv first (see experiments/README.md, 'GPU run')" | tee -a "$OUT/run.log"
    exit 2
  fi
  step venv venv.log python3 -m venv .venv
  step install-planner install-planner.log .venv/bin/pip install --no-index --find-links "$WHEELS" -e '.[test]'
fi
if [ ${#wheels[@]} -gt 0 ]; then
  regular=() ; ort_gpu=()
  for w in "${wheels[@]}"; do
    case "$(basename "$w")" in
      onnxruntime_gpu-*) ort_gpu+=("$w") ;;
      setuptools-*|wheel-*) ;;
      *) regular+=("$w") ;;
    esac
  done
  [ ${#regular[@]} -eq 0 ] || step install-wheels install-wheels.log \
      "$PY" -m pip install --no-index --find-links "$WHEELS" "${regular[@]}"
  # onnxruntime-gpu ships the same `onnxruntime` package as the CPU wheel planner depends on:
  # lay it over the CPU one (no dependency changes) so `import onnxruntime` has the CUDA providers
  [ ${#ort_gpu[@]} -eq 0 ] || step install-onnxruntime-gpu install-onnxruntime-gpu.log \
      "$PY" -m pip install --no-index --no-deps --force-reinstall "${ort_gpu[@]}"
fi
PLANNER=("$PY" -m planner)

# ------------------------------------------------------------------ 1. environment
step environment environment.txt bash -c '
  echo "# date: $(date -Is)"; echo "# host: $(hostname)"; uname -a
  echo "# git: $(git rev-parse HEAD 2>/dev/null) dirty_files=$(git status --porcelain 2>/dev/null | wc -l)"
  echo "## nvidia-smi"; nvidia-smi || echo "nvidia-smi: not available"
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>/dev/null
  echo "## CPU"; lscpu 2>/dev/null | head -20
  echo "## pip freeze"; "$0" -m pip freeze 2>/dev/null
' "$PY"
"$PY" - > "$OUT/environment.json" 2>> "$OUT/run.log" <<'EOF'
import json, platform, importlib.util
env = {"python": platform.python_version(), "platform": platform.platform()}
try:
    import torch
    env["torch"] = torch.__version__
    env["torch_cuda"] = torch.version.cuda
    env["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    env["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gb": round(p.total_memory / 2**30, 1),
                      "sm_count": p.multi_processor_count, "count": torch.cuda.device_count()}
except Exception as e:
    env["torch_error"] = repr(e)
if importlib.util.find_spec("onnxruntime"):
    import onnxruntime as ort
    env["onnxruntime"] = ort.__version__
    env["onnxruntime_providers"] = ort.get_available_providers()
if importlib.util.find_spec("tensorrt"):
    try:
        import tensorrt as trt
        env["tensorrt"] = trt.__version__
    except Exception as e:
        env["tensorrt_error"] = repr(e)
if importlib.util.find_spec("tvm"):
    try:
        import tvm
        env["tvm"] = tvm.__version__
        env["tvm_cuda"] = bool(tvm.runtime.enabled("cuda"))
    except Exception as e:
        env["tvm_error"] = repr(e)
print(json.dumps(env, indent=2))
EOF
cat "$OUT/environment.json"

# ALLOW_CPU=1 runs the remaining steps on a CPU host: a check of this script's plumbing, never results
if [ "${ALLOW_CPU:-0}" != 1 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
  echo "torch sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null)):" \
       "install a CUDA build of torch from $WHEELS and check nvidia-smi; nothing measured." | tee -a "$OUT/run.log"
  printf 'no-cuda\t3\t0\n' >> "$OUT/steps.tsv"
  exit 3
fi

# ------------------------------------------------------------------ 2. probe, studies, Pareto fronts
step backends backends.txt "${PLANNER[@]}" backends
step probe probe.log "${PLANNER[@]}" probe --out "$OUT/target.yaml"
step space space.txt "${PLANNER[@]}" spaces show search_spaces/gpu.yaml
for model in $MODELS; do
  study="$model-gpu"
  step "study-$model" "study-$model.log" "${PLANNER[@]}" optimize --model "$model" --target "$OUT/target.yaml" \
      --space search_spaces/gpu.yaml --study "$study" --trials "$TRIALS" --timeout "$STUDY_TIMEOUT" \
      --trial-timeout "$TRIAL_TIMEOUT" --tvm-tuning-budget "$TVM_BUDGET" --seed 0 --home "$STATE"
  step "pareto-$model" "pareto-$model.txt" "${PLANNER[@]}" pareto --study "$study" --home "$STATE"
  step "knee-$model" "knee-$model.txt" "${PLANNER[@]}" pareto --study "$study" --policy knee --home "$STATE"
  step "trials-$model" "trials-$model.log" "$PY" - "$STATE" "$study" "$OUT/trials-$model.json" <<'EOF'
import json, sys
import optuna
home, name, out = sys.argv[1:4]
optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(study_name=name, storage=f"sqlite:///{home}/optuna.db")
rows = []
for t in study.trials:
    ua = t.user_attrs
    rows.append({"number": t.number, "state": t.state.name, "values": t.values, "params": t.params,
                 "config": ua.get("config"), "metrics": ua.get("metrics"), "duplicate_of": ua.get("duplicate_of"),
                 "fail_reason": ua.get("fail_reason"), "fail_message": ua.get("fail_message")})
json.dump({"study": name, "trials": rows}, open(out, "w"), indent=2, default=str)
states = {}
for r in rows:
    key = r["state"] if r["state"] != "FAIL" else f"FAIL:{r['fail_reason']}"
    states[key] = states.get(key, 0) + 1
print(f"{name}: {len(rows)} trials: {states}")
EOF
done

# ------------------------------------------------------------------ 3. the gpu test suite
step pytest-gpu pytest-gpu.log "$PY" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider \
    --junitxml "$OUT/pytest-gpu.xml"

# ------------------------------------------------------------------ 4. what is where
{
  echo "# GPU run $STAMP"
  echo
  echo "Short studies ($TRIALS trials per model) on the probed target: a smoke run of the search on this GPU,"
  echo "not a benchmark. Compare latencies only within one study; baselines need an interleaved run."
  echo
  echo "| step | exit code | seconds |"; echo "|---|---:|---:|"
  tail -n +2 "$OUT/steps.tsv" | awk -F'\t' '{print "| " $1 " | " $2 " | " $3 " |"}'
  echo
  echo "- environment: environment.txt (nvidia-smi, pip freeze), environment.json (torch/CUDA/cuDNN, ORT providers, TensorRT, TVM)"
  echo "- target.yaml: \`planner probe\`; space: search_spaces/gpu.yaml (space.txt)"
  echo "- per model: study-<model>.log, pareto-<model>.txt, knee-<model>.txt, trials-<model>.json"
  echo "- pytest-gpu.log / pytest-gpu.xml: \`pytest -m gpu tests/gpu\`"
  echo "- planner state (Optuna, MLflow, engines): $STATE  (\`planner ui --home $STATE\`)"
} > "$OUT/README.md"
echo "results: $OUT"
exit "$FAILED"
