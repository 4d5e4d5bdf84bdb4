#!/usr/bin/env bash
# Download, on a machine with internet and this project's .venv, the wheels a short-lived GPU host needs to run
# planner from this tree (PYTHONPATH, no venv, no network there): what planner imports that the GPU image lacks,
# with their dependencies, minus what the image already has.  experiments/run_gpu.sh installs them from there.
#
#   experiments/gpu_wheels.sh                       # Python 3.12, into experiments/wheels-py312/ (git-ignored)
#   PYVER=3.11 DEST=/tmp/w experiments/gpu_wheels.sh
#
# The versions are this .venv's (the ones the test suite passed with); each wheel is fetched with
# `pip download --no-deps --python-version $PYVER --only-binary=:all:` for manylinux x86_64, so nothing is built
# and no dependency of an image package (torch, above all) is pulled in.  Fails when the folder outgrows MAX_MB
# (a GPU host takes 64 MiB of files per call, the repository included).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
PYVER=${PYVER:-3.12}
DEST=${DEST:-experiments/wheels-py${PYVER/./}}
MAX_MB=${MAX_MB:-60}
# what planner needs that the GPU image lacks
NEED=${NEED:-"optuna mlflow pydantic torch-pruning pytest pytest-timeout"}
# the GPU image (torch 2.11 cu130, Python 3.12) and the dependencies its packages bring: never downloaded
HAVE=${HAVE:-"torch torchvision onnx onnxscript onnx-ir onnxruntime numpy matplotlib typer rich pyyaml scikit-learn
  transformers scipy joblib threadpoolctl huggingface-hub hf-xet tokenizers safetensors regex filelock fsspec
  requests urllib3 idna certifi charset-normalizer tqdm packaging typing-extensions sympy mpmath networkx jinja2
  markupsafe triton setuptools pillow contourpy cycler fonttools kiwisolver pyparsing python-dateutil six click
  shellingham markdown-it-py mdurl pygments protobuf ml-dtypes"}
# large, and not used by planner's MLflow calls (tracking and registry to a sqlite store; no DataFrames): a study
# runs without them (experiments/README.md, "GPU run", says how that was checked)
SKIP=${SKIP:-"pandas pyarrow"}

[ -x "$PY" ] || { echo "no $PY: run 'make install' first (the wheel versions come from that environment)" >&2; exit 2; }
mkdir -p "$DEST"
pins=$("$PY" - "$NEED" "$HAVE $SKIP" "$PYVER" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

need, leave, pyver = sys.argv[1].split(), {canonicalize_name(x) for x in sys.argv[2].split()}, sys.argv[3]
env = {"python_version": pyver, "python_full_version": f"{pyver}.0", "sys_platform": "linux", "platform_system": "Linux",
       "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython",
       "platform_python_implementation": "CPython"}
pins, todo = {}, [Requirement(r) for r in need]
while todo:  # the dependency closure of NEED in this environment, not descending into what the image has
    req = todo.pop()
    name = canonicalize_name(req.name)
    if name in leave or name in pins:
        continue
    try:
        dist = distribution(req.name)
    except PackageNotFoundError:
        sys.exit(f"gpu_wheels.sh: {req.name} is not installed in this environment (the versions come from it)")
    pins[name] = dist.version
    for line in dist.requires or []:
        r = Requirement(line)
        if r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in [""] + sorted(req.extras)):
            todo.append(r)
print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())))
EOF
)
echo "$pins" > "$DEST/requirements.txt"
echo "$(echo "$pins" | wc -l) packages for Python $PYVER into $DEST"
plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform linux_x86_64)
# one `pip download` for all of them (no resolution: --no-deps, exact pins)
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${plat[@]}" -d "$DEST" -r "$DEST/requirements.txt"
mb=$(du -sm "$DEST" | cut -f1)
echo "$(ls "$DEST"/*.whl | wc -l) wheels, ${mb} MiB in $DEST"
if [ "$mb" -gt "$MAX_MB" ]; then
  echo "more than MAX_MB=$MAX_MB MiB: a GPU host takes 64 MiB per call, the repository included" >&2
  exit 1
fi
