#!/usr/bin/env bash
# One command on a short-lived NVIDIA GPU host (one call of at most 10 minutes, no network, no venv), in
# at most BUDGET seconds (default 470, under 8 minutes):
#
#   0. install the wheels of experiments/gpu_wheels.sh into a folder on PYTHONPATH (no venv, no index)
#   1. environment: nvidia-smi, Python, torch/CUDA/cuDNN, ONNX Runtime providers   -> environment.txt
#   2. `planner probe` (with sm_count), then a short measurement protocol on it     -> environment.txt
#   3. `pytest -m gpu tests/gpu`                                                     -> pytest-gpu.log
#   4. short studies of resnet18 and bert-mini at b=1 and b=32 (experiments/configs/gpu-short.yaml,
#      --timeout STUDY_TIMEOUT each, the re-measurement inside it), their Pareto fronts -> study-<model>.log,
#      every trial of both                                                            -> trials.json
#   5. interleaved side by side: each study's winner vs eager fp32 vs torch.compile default -> side-by-side.json
#   6. what ran, for how long, with which exit code                                  -> summary.md; all steps -> run.log
#
# At most 8 files, all under OUT, so the folder can be copied back as it is.  Every step is cut to the time left;
# a step with less than 10 s left is skipped and summary.md says so.
#
#   OUT=$OUT experiments/run_gpu.sh              # on the GPU host (the tree + experiments/wheels-py312 sent along)
#   ALLOW_CPU=1 MODELS=tiny-mlp STUDY_TIMEOUT=20 experiments/run_gpu.sh   # plumbing check on a CPU host (no results)
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$SECONDS

BUDGET=${BUDGET:-470}
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-experiments/wheels-py312}
SITE=${SITE:-/tmp/planner-gpu-site}            # the wheels, installed (--target): on PYTHONPATH
STATE=${STATE:-/tmp/planner-gpu-state}         # planner home: Optuna, MLflow, engines (not copied back)
OUT=${OUT:-experiments/results/gpu-$(date +%Y-%m-%d-%H%M%S)}
MODELS=${MODELS:-"resnet18 bert-mini"}
SPACE=${SPACE:-experiments/configs/gpu-short.yaml}
TRIALS=${TRIALS:-12}
STUDY_TIMEOUT=${STUDY_TIMEOUT:-60}             # seconds per study: trials + re-measurement (planner --timeout)
TRIAL_TIMEOUT=${TRIAL_TIMEOUT:-45}             # seconds per candidate (a trial started before STUDY_TIMEOUT may finish)
ROUNDS=${ROUNDS:-3}                            # interleaved rounds of the side by side

export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PIP_NO_INDEX=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true
mkdir -p "$OUT" "$STATE"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/run.log
STEPS=""

left() { echo $((BUDGET - (SECONDS - T0))); }

step() {  # step NAME CAP FILE CMD...: run CMD for at most min(CAP, time left) seconds, output appended to OUT/FILE
  local name=$1 cap=$2 file=$3; shift 3
  local t; t=$(left)
  [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 10 ]; then
    echo "=== $name: skipped, $(left) s of the $BUDGET s budget left" | tee -a "$LOG"
    STEPS+="| $name | skipped: budget spent | 0 |"$'\n'
    return 99
  fi
  local t1=$SECONDS cmd="$*"
  echo "=== $name (at most $t s): ${cmd:0:240}" | tee -a "$LOG"
  { echo "### $name: $*"; } >> "$OUT/$file"
  timeout -k 5 "$t" "$@" >> "$OUT/$file" 2>&1
  local rc=$?
  local note=""
  [ "$rc" -eq 124 ] && note=" (cut at $t s)"
  STEPS+="| $name | $rc$note | $((SECONDS - t1)) |"$'\n'
  echo "=== $name: exit $rc after $((SECONDS - t1)) s" | tee -a "$LOG"
  return "$rc"
}

# ------------------------------------------------------------------ 0. wheels -> SITE
if "$PY" -c 'import optuna, mlflow, pydantic' 2>/dev/null; then
  echo "optuna, mlflow and pydantic import already: no wheels installed" | tee -a "$LOG"
else
  shopt -s nullglob
  wheels=("$WHEELS"/*.whl)
  if [ ${#wheels[@]} -eq 0 ]; then
    echo "no wheels in $WHEELS and no optuna/mlflow/pydantic here: run experiments/gpu_wheels.sh where there is" \
         "internet and send $WHEELS along (experiments/README.md, 'GPU run')" | tee -a "$LOG"
    exit 2
  fi
  step install 120 run.log "$PY" -m pip install --no-index --no-deps --disable-pip-version-check --quiet \
      --target "$SITE" "${wheels[@]}"
fi

# ------------------------------------------------------------------ 1. environment
step environment 30 environment.txt bash -c '
  echo "# date: $(date -Is)  host: $(hostname)  git: $(git rev-parse HEAD 2>/dev/null)"
  nvidia-smi || echo "nvidia-smi: not available"
  nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>/dev/null
  lscpu 2>/dev/null | head -15
  "$0" - <<\EOF
import importlib.util, json, platform
env = {"python": platform.python_version()}
import torch
env.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
           cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                  "memory_gb": round(p.total_memory / 2**30, 1)}
for m in ("onnxruntime", "optuna", "mlflow", "pydantic", "torch_pruning", "transformers", "tensorrt", "tvm"):
    if importlib.util.find_spec(m):
        mod = __import__(m)
        env[m] = getattr(mod, "__version__", "?")
if importlib.util.find_spec("onnxruntime"):
    import onnxruntime
    env["onnxruntime_providers"] = onnxruntime.get_available_providers()
print(json.dumps(env, indent=2))
EOF
' "$PY"

if [ "${ALLOW_CPU:-0}" != 1 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
  echo "torch sees no CUDA device: nothing measured (see environment.txt)" | tee -a "$LOG"
  exit 3
fi

# ------------------------------------------------------------------ 2. probe, with a short protocol for the studies
step probe 30 environment.txt bash -c '
  "$0" -m planner probe --out "$1/target-probed.yaml" && cat "$1/target-probed.yaml" && "$0" - "$1" <<\EOF
import sys
from pathlib import Path
from planner.target import Protocol, load_target
state = Path(sys.argv[1])
t = load_target(state / "target-probed.yaml")
short = Protocol(warmup_iters=10, warmup_seconds=0.1, min_repeats=100, min_seconds=0.3, max_seconds=2.0,
                 cv_threshold=0.1, max_remeasure=1)
(state / "target.yaml").write_text(t.model_copy(update={"measurement": short}).to_yaml())
print("# studies use this protocol:", short)
EOF
' "$PY" "$STATE"
TARGET=$STATE/target.yaml
[ "${ALLOW_CPU:-0}" = 1 ] && [ ! -f "$TARGET" ] && TARGET=${CPU_TARGET:-tests/data/fast-cpu.yaml}

# ------------------------------------------------------------------ 3. the gpu test suite
step pytest-gpu 110 pytest-gpu.log "$PY" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider -o addopts=""

# ------------------------------------------------------------------ 4. short studies, b=1 and b=32
for model in $MODELS; do
  # start-up and the fp32 reference, --timeout, a trial started just before it, then the front and the registry
  step "study-$model" $((STUDY_TIMEOUT + TRIAL_TIMEOUT + 60)) "study-$model.log" "$PY" -m planner optimize \
      --model "$model" --target "$TARGET" --space "$SPACE" --study "$model-gpu" --trials "$TRIALS" \
      --timeout "$STUDY_TIMEOUT" --trial-timeout "$TRIAL_TIMEOUT" --confirm 2 --confirm-rounds 2 --seed 0 --home "$STATE"
  step "knee-$model" 20 "study-$model.log" "$PY" -m planner pareto --study "$model-gpu" --policy knee --home "$STATE"
done
step trials 20 run.log "$PY" - "$STATE" "$OUT/trials.json" $MODELS <<'EOF'
import json, sys
import optuna
home, out, models = sys.argv[1], sys.argv[2], sys.argv[3:]
optuna.logging.set_verbosity(optuna.logging.WARNING)
dump = {}
for m in models:
    try:
        study = optuna.load_study(study_name=f"{m}-gpu", storage=f"sqlite:///{home}/optuna.db")
    except KeyError:
        continue
    dump[study.study_name] = {"confirmation": study.user_attrs.get("confirmation"), "trials": [
        {"number": t.number, "state": t.state.name, "values": t.values, "config": t.user_attrs.get("config"),
         "metrics": t.user_attrs.get("metrics"), "duplicate_of": t.user_attrs.get("duplicate_of"),
         "fail_reason": t.user_attrs.get("fail_reason"), "fail_message": t.user_attrs.get("fail_message"),
         "seconds": t.duration.total_seconds() if t.duration else None} for t in study.trials]}
json.dump(dump, open(out, "w"), indent=2, default=str)
for name, s in dump.items():
    states = {}
    for t in s["trials"]:
        k = t["state"] if t["state"] != "FAIL" else f"FAIL:{t['fail_reason']}"
        states[k] = states.get(k, 0) + 1
    print(f"{name}: {len(s['trials'])} trials {states}")
EOF

# ------------------------------------------------------------------ 5. winner vs eager fp32 vs torch.compile default
for model in $MODELS; do
  step "side-by-side-$model" 90 run.log "$PY" experiments/gpu_side_by_side.py --study "$model-gpu" --home "$STATE" \
      --rounds "$ROUNDS" --timeout 80 --out "$OUT/side-by-side.json"
done

# ------------------------------------------------------------------ 6. summary
{
  echo "# GPU run $(date -Is)"
  echo
  echo "Short studies (--timeout $STUDY_TIMEOUT s each, space $SPACE) on the probed GPU: a check that the GPU paths"
  echo "build, measure and rank, not a benchmark. Speed-ups: side-by-side.json (interleaved, $ROUNDS rounds)."
  echo
  echo "| step | exit code | seconds |"; echo "|---|---|---:|"
  printf '%s' "$STEPS"
  echo
  echo "total: $((SECONDS - T0)) s of a $BUDGET s budget"
  echo
  echo "- environment.txt: nvidia-smi, torch/CUDA/cuDNN, packages, \`planner probe\` (target), the studies' protocol"
  echo "- pytest-gpu.log: \`pytest -m gpu tests/gpu\`"
  echo "- study-<model>.log: the study's console (trials, re-measurement, Pareto front) and the knee pick"
  echo "- trials.json: every trial of every study (config, metrics, fail reason, seconds) and the confirmation"
  echo "- side-by-side.json: each study's winner vs eager fp32 vs torch.compile default, interleaved"
  echo "- run.log: every step's command, exit code and time; the side by side's output"
  grep -h -A8 "interleaved, " "$LOG" 2>/dev/null | sed 's/^/    /'
} > "$OUT/summary.md"
echo "results: $OUT ($(ls "$OUT" | wc -l) files)"
