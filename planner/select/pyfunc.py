"""The ``python_function`` loader of a registered planner deployment (an MLflow Model, see `planner.select.mlmodel`).

MLflow calls ``_load_pyfunc(<model folder>)`` from ``mlflow.pyfunc.load_model("models:/planner-…@knee")`` and
from ``mlflow models serve``.  The model folder is the trial's ``engine/`` artifact: the engine files as
measured, ``MLmodel`` (planner's manifest under ``metadata.planner``) and ``code/planner`` (`LOADER_CODE`: the
part of this package the loader runs, so the model loads where planner is not installed).  Loading:

  1. every engine file listed in the manifest must have its recorded sha256 (`planner.select.verify.check_files`,
     as ``planner verify`` checks a bundle): a changed file fails the load with one line naming it;
  2. the engine is loaded by its backend's own ``load_artifact`` (`planner.select.verify.load_engine`, the
     loader ``planner verify`` runs): ONNX Runtime, OpenVINO, TVM's runtime or torch, nothing else.  This
     module imports no search, measurement or tracking code of planner, and no torch unless the engine is a
     torch program.

``predict`` takes the inputs named in the signature (a dict of arrays, or one array for a one-input model)
in the model's own layout (each input's batch on its batch axis, axis 0 unless the model says otherwise; an
input without one, such as a scalar, as it is), runs them in batches of the engine's batch size (a fixed-batch
engine gets the last batch padded) and returns one float32 array ``[samples, width]``: every output of a sample
flattened and concatenated (an output batched on another axis has it moved first), the layout of a bundle's
``samples.npz`` ``ref`` and of Triton's Python backend output.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

META_KEY = "planner"  # MLmodel metadata key of planner's facts (manifest, engine file, batch size, ...)
# The parts of the planner package this loader runs (paths under planner/), shipped as the model's code: the
# backends (their modules are light; each one's `load_artifact` imports its runtime when called), the checksum
# check and the engine loader of `planner verify`, and what those import.  No search, measurement, tracking,
# model-source or transform code beyond the quantization tables the backend modules read at import.
LOADER_CODE = ("__init__.py", "errors.py", "paths.py", "cache.py", "schemes.py", "backends", "transforms/__init__.py",
               "transforms/quantize.py", "select/__init__.py", "select/verify.py", "select/pyfunc.py")


class TamperedModel(Exception):
    """An engine file differs from the sha256 the manifest recorded at registration."""


def model_facts(model_dir: Path) -> dict[str, Any]:
    """``metadata.planner`` of ``model_dir/MLmodel`` (read with MLflow's own parser)."""
    from mlflow.models import Model

    meta = Model.load(str(Path(model_dir) / "MLmodel")).metadata or {}
    facts = meta.get(META_KEY)
    if not isinstance(facts, dict) or not facts.get("engine_file"):
        raise ValueError(f"{model_dir}/MLmodel: no metadata.{META_KEY}.engine_file: not a planner deployment")
    return facts


def check_engine_files(model_dir: Path, facts: dict[str, Any]) -> None:
    """Raise `TamperedModel` when a file listed in the manifest is missing or has another sha256."""
    from planner.select.verify import VerifyReport, check_files

    rep = VerifyReport(Path(model_dir))
    check_files(Path(model_dir), facts.get("manifest") or {}, rep)
    if not rep.ok:
        raise TamperedModel(f"planner deployment {facts.get('registered_as') or model_dir}: refusing to load: "
                            + "; ".join(rep.problems) + " (engine files changed since registration; compare manifest sha256)")


def _chunks(inputs: dict[str, Any], n: int, batch: int, pad: bool, axes: dict[str, int | None] | None = None):
    """(feed, valid) over n samples in batches of ``batch``; ``pad``: the last one filled to ``batch``.  ``axes``:
    each input's batch axis (default 0; None: not batched, fed whole to every call)."""
    import numpy as np

    axes = axes or {}
    for start in range(0, n, batch):
        valid = min(batch, n - start)
        idx = np.arange(start, start + (batch if pad else valid)) % n
        yield {k: (v if axes.get(k, 0) is None else np.ascontiguousarray(np.take(v, idx, axis=axes.get(k, 0))))
               for k, v in inputs.items()}, valid


class PlannerEngine:
    """The loaded engine behind ``PyFuncModel.predict``."""

    def __init__(self, model_dir: Path, facts: dict[str, Any]):
        from planner.select.verify import load_engine

        self.facts = facts
        self.batch = int(facts["batch_size"])
        self.dynamic = bool(facts.get("dynamic_batch"))
        # a dynamic-batch engine takes up to the target's max batch per call
        self.max_batch = max(self.batch, int(facts.get("max_batch_size") or self.batch)) if self.dynamic else self.batch
        self.input_names = [i["name"] for i in facts.get("inputs") or []]
        self.axes = {i["name"]: i.get("batch_axis", 0) for i in facts.get("inputs") or []}
        self.out_axes = facts.get("output_axes")  # None: every output batches on axis 0
        device = facts.get("device") or "cpu"
        if "torch" in _backend(facts["engine_file"]).modules:
            import torch

            torch.set_num_threads(int(facts.get("threads") or os.cpu_count() or 1))
        self.runtime = load_engine(Path(model_dir), facts["engine_file"], self.batch, device)

    def _feed(self, model_input) -> dict[str, Any]:
        import numpy as np

        if isinstance(model_input, dict):
            missing = [n for n in self.input_names if n not in model_input]
            if missing:
                raise ValueError(f"missing input(s) {missing}; the engine takes {self.input_names}")
            return {n: np.asarray(model_input[n]) for n in self.input_names or model_input}
        if hasattr(model_input, "to_numpy") and len(self.input_names) == 1:  # a DataFrame of one tensor's rows
            model_input = model_input.to_numpy()
        if len(self.input_names) != 1:
            raise ValueError(f"the engine takes inputs {self.input_names}: pass a dict of arrays")
        return {self.input_names[0]: np.asarray(model_input)}

    def predict(self, model_input, params: dict[str, Any] | None = None):
        import numpy as np

        feed = self._feed(model_input)
        batched = [(k, self.axes.get(k, 0)) for k in feed if self.axes.get(k, 0) is not None]
        if not batched:
            raise ValueError(f"no input of {list(feed)} has a batch axis: nothing says how many samples there are")
        n = int(np.shape(feed[batched[0][0]])[batched[0][1]])
        outs = []
        for chunk, valid in _chunks(feed, n, self.max_batch, pad=not self.dynamic, axes=self.axes):
            res = self.runtime.infer(chunk)
            if self.out_axes:
                res = [np.moveaxis(np.asarray(o), a, 0) for o, a in zip(res, self.out_axes)]
            b = res[0].shape[0]
            outs.append(np.concatenate([np.asarray(o, dtype=np.float32).reshape(b, -1) for o in res], axis=1)[:valid])
        return np.concatenate(outs) if outs else np.zeros((0, 0), np.float32)


def _backend(engine_file: str):
    from planner.select.verify import engine_backend

    return engine_backend(engine_file)


def _load_pyfunc(data_path: str, model_config: dict | None = None) -> PlannerEngine:
    model_dir = Path(data_path)
    facts = model_facts(model_dir)
    check_engine_files(model_dir, facts)
    return PlannerEngine(model_dir, facts)
