"""The torch-level transforms of a trial in order: structured pruning, then distillation of the pruned student from
the fp32 teacher (in stages, judged and cached after each, `planner.transforms.distill.distill_staged`).  Run in
the worker by `planner.source.ModelSource.torch_module`, which caches the result per (prune, distill)."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from planner.transforms.distill import SCHEDULE

if TYPE_CHECKING:  # pragma: no cover
    from planner.config import DistillConfig, PruneConfig

# What a pruned or distilled model is besides its config, in the keys of the students and exports cached from it:
# changed whenever pruning or distillation change what a config yields (channels kept rounded up to round_to, not
# down; the learning rate annealed over each stage), so no cache hands back a model of the old recipe.
RECIPE = f"channels-kept-rounded-up;distill-lr-{SCHEDULE}"
DISTILL_DATA_BYTES = 256 << 20  # inputs held for distillation (2048 digits images are 2 MB; 256 MB is ~430 resnet18 images)


def apply_transforms(source, base, prune: "PruneConfig", distill: "DistillConfig"):
    """A copy of ``base`` pruned and distilled per the config, with what each step did in ``source.transform_info``
    (``source``: the `planner.source.ModelSource` the worker holds: its data, cache and quality judge)."""
    import copy

    import torch

    module = copy.deepcopy(base)
    example = tuple(torch.from_numpy(v) for v in source.example_inputs(2, seed=123).values())
    if prune.active:
        from planner.transforms.prune import prune as do_prune

        from planner.transforms.prune import prune_info

        t0 = time.perf_counter()
        flops_before = flops_per_sample(module, example)
        module = do_prune(module, prune, example)
        source.transform_info["prune_seconds"] = time.perf_counter() - t0
        info = prune_info(module) or {}
        for k in ("params_before", "params_after", "sparsity"):
            if isinstance(info.get(k), (int, float)):
                source.transform_info[f"prune_{k}"] = info[k]
        source.transform_info["prune_size_only"] = float(bool(info.get("size_only")))
        if flops_before:
            source.transform_info["flops_before"] = flops_before
            source.transform_info["flops_after"] = flops_per_sample(module, example)
    if distill.active:
        from planner.transforms.distill import distill as do_distill

        t0 = time.perf_counter()
        if prune.active:  # in stages, judged and cached after each (planner.transforms.distill.distill_staged)
            from dataclasses import replace

            from planner.transforms.distill import STAGES, distill_staged

            # one data pool for every step count (that of the longest stage): a student continued from a
            # shorter request's cached stage then equals one trained through, and a rebuild without the
            # cache trains the student that was measured
            pool = replace(distill, steps=max(int(distill.steps), STAGES[-1]))
            calib = source.calibration_inputs(_distill_samples(source, pool), seed=7)

            load, save = _student_cache(source, module, distill, _distill_samples(source, pool))
            info = distill_staged(module, base, distill, calib, source.input_names, judge=source.distill_judge,
                                  bound=source.distill_bound, load=load, save=save)
        else:
            calib = source.calibration_inputs(_distill_samples(source, distill), seed=7)
            info = do_distill(module, base, distill, calib, source.input_names)
        source.transform_info.update(info or {})
        source.transform_info["distill_data_held_out"] = float(source.calibration_source == "held-out")
        source.transform_info["distill_seconds"] = time.perf_counter() - t0
    return module.eval()

def _student_cache(source, pruned, distill: "DistillConfig", pool: int):
    """(load, save) of pruned students distilled to a stage, on disk under the cache folder, keyed by the model,
    the pruned network it starts from (its weights: prunings that build the same network, e.g. l1 at 0.5 and 0.6
    keeping the same channels at round_to 8, share their student), the training settings, the data pool and
    `RECIPE` (not the steps asked for: a longer request continues a shorter one's student)."""
    import torch

    folder = source.cache_dir / "students"
    base = repr((source.model_hash(), network_digest(pruned), float(distill.lr), int(distill.batch),
                 source.calibration_source, int(pool), RECIPE))

    def path(steps: int) -> Path:
        return folder / f"{hashlib.sha256(f'{base}|{steps}'.encode()).hexdigest()[:20]}.pt"

    def load(steps: int):
        p = path(steps)
        if not p.is_file():
            return None
        try:
            return torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 -- a torn or stale file: train again
            return None

    def save(steps: int, state) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path(steps).with_suffix(f".{os.getpid()}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path(steps))

    return load, save


def network_digest(module) -> str:
    """A content hash of ``module``'s state (every tensor's name, shape, dtype and values)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def _distill_samples(source, distill) -> int:
    """How many calibration samples distillation draws from: as many as its steps touch (at least 64),
    capped at `DISTILL_DATA_BYTES` of inputs."""
    one = source.calibration_inputs(1, seed=7)
    per_sample = max(1, sum(a.nbytes for a in one.values()))
    return max(64, min(distill.steps * distill.batch, DISTILL_DATA_BYTES // per_sample))


def flops_per_sample(module, example: tuple) -> float | None:
    """FLOPs of one forward pass per sample (torch's FLOP counter), None when it cannot count."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            module(*example)
        return counter.get_total_flops() / max(1, example[0].shape[0])
    except Exception:
        return None
