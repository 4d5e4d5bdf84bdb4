"""Knowledge-distillation recovery after pruning: a few Adam steps towards the teacher.

``distill(student, teacher, cfg, calib, input_names)`` trains ``student`` in place for
``cfg.steps`` Adam steps at ``cfg.lr`` on minibatches of ``cfg.batch`` samples drawn from
the unlabelled calibration inputs ``calib``, stopping early once ``cfg.max_seconds`` of
training time are spent (``distill_steps`` then says how many were done, and
``distill_stopped`` is ``"max_seconds"``).

Learning rate: ``cfg.lr`` annealed to 0 over the call's steps on a half cosine (`SCHEDULE`, `lr_at`).  At a
constant rate Adam's steps keep the student jittering around the teacher: digits-cnn's l1-0.5 student at
0.003 stayed at an MSE of ~0.062 to the teacher from 1000 to 3000 steps, 3–6 of 540 test digits answered
differently (`experiments/results/student-stages-*.md`); annealed, each stage ends where the noise has settled.
A staged distillation anneals each stage on its own (a warm restart per stage), so a student continued from a
stage still equals one trained through it.

Loss: mean squared error between student and teacher outputs (every floating-point
output tensor, summed).  MSE was chosen over KL-on-softmax because it needs no
assumption about the output kind (logits, embeddings, several outputs) and it is the
same quantity the quality metrics compare.

* The teacher runs in eval mode under ``torch.no_grad``.
* The student trains in train mode except for its normalisation layers with running
  statistics (BatchNorm/InstanceNorm), which stay in eval mode: their statistics are
  not updated from the small calibration set.  The student is left in eval mode.
* Only float32 parameters are trained; a quantized student (torch.ao quantized
  modules, torchao tensor subclasses, non-float parameters) or one cast to fp16/bf16
  is left untouched and the result says why (``skipped``).
* The loss is measured before and after on a fixed evaluation subset of ``calib``
  (the first `EVAL_SAMPLES` samples), in eval mode.
* The global RNG is left as it was (batches and dropout use a forked, seeded RNG).
* Padded token batches are cut to their longest sample (`SequenceTrim`): with an integer
  ``attention_mask`` input of shape (N, T), the columns after the batch's last attended
  position are dropped from every integer input of that shape.  It is used only when the
  teacher's outputs on the evaluation subset are the same with and without the cut (so a
  model whose output depends on padding is trained untrimmed), and ``distill_seq_trim``
  records the mean kept fraction of columns (1.0 when untrimmed).  MiniLM's real sentences
  (~16 tokens, padded to 128) keep ~27 % of the columns: a step costs about a third.

Returns ``{"distill_loss_before", "distill_loss_after", "distill_steps",
"distill_seconds", "distill_seq_trim", "distill_loss": "mse"}`` (plus ``skipped`` when nothing
was trained, without ``distill_seq_trim``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from planner.errors import CandidateFailed, ConfigError, FailReason

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    from torch import nn

    from planner.config import DistillConfig

EVAL_SAMPLES = 64
SCHEDULE = "cosine"  # the learning rate over a call's steps: "cosine" (annealed to 0) or "constant"
SCHEDULES = ("cosine", "constant")
EVAL_BATCH = 32
GRAD_CLIP = 1.0
SEED = 0
MASK_INPUT = "attention_mask"
TRIM_ATOL = 1e-5


class SequenceTrim:
    """Cuts a padded token batch after its last attended column (see the module docstring)."""

    def __init__(self, arrays: "dict[str, Any]", input_names: list[str]):
        mask = arrays.get(MASK_INPUT)
        self.names: tuple[str, ...] = ()
        if mask is not None and mask.ndim == 2 and not mask.is_floating_point():
            width = mask.shape[1]
            self.names = tuple(k for k in input_names if arrays[k].ndim == 2 and arrays[k].shape[1] == width
                               and not arrays[k].is_floating_point())

    def __call__(self, x: "dict[str, Any]") -> "dict[str, Any]":
        if not self.names:
            return x
        cols = x[MASK_INPUT].ne(0).any(0).nonzero()
        t = int(cols[-1]) + 1 if len(cols) else 1
        return {k: (v[:, :t] if k in self.names else v) for k, v in x.items()}

    def disable(self) -> None:
        self.names = ()


def _float_outputs(out) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out] if out.is_floating_point() else []
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _float_outputs(o)]
    return []


def _loss(s_out, t_out):
    import torch.nn.functional as F

    s, t = _float_outputs(s_out), _float_outputs(t_out)
    if not s or len(s) != len(t):
        raise ValueError(f"student gives {len(s)} float outputs, teacher {len(t)}")
    return sum(F.mse_loss(a.float(), b.float()) for a, b in zip(s, t))


def quantized_reason(module: "nn.Module") -> str | None:
    """Why ``module`` must not be trained (quantized / not float32), or None."""
    import torch

    for name, m in module.named_modules():
        mod = type(m).__module__
        if "quantized" in mod or mod.startswith("torchao"):
            return f"quantized module {name or '<root>'} ({type(m).__name__})"
    params = list(module.parameters())
    for p in params:
        if type(p.data) is not torch.Tensor:
            return f"parameter stored as {type(p.data).__name__} (quantized tensor subclass)"
        if p.dtype != torch.float32:
            return f"parameters are {p.dtype}, only float32 ones are trained"
    if not params:
        return "no parameters"
    return None


def distill(
    student: "nn.Module",
    teacher: "nn.Module",
    cfg: "DistillConfig",
    calib: "dict[str, np.ndarray]",
    input_names: list[str],
    seed: int = SEED,
    schedule: str = SCHEDULE,
) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` in place; returns losses before/after.  ``seed`` seeds the batches
    (a stage of `distill_staged` starting at step s uses SEED + s); ``schedule``: the learning rate over the
    steps (`lr_at`)."""
    _check(cfg, calib, input_names)
    if schedule not in SCHEDULES:
        raise ConfigError(f"distill: schedule {schedule!r}; valid: {', '.join(SCHEDULES)}")
    params = list(student.parameters())
    data = _Batches(calib, input_names, params[0].device if params else None)
    t0 = time.perf_counter()
    teacher.eval()
    reason = quantized_reason(student)
    result: dict[str, Any] = {"distill_loss": "mse", "distill_steps": 0}
    if reason is None and not cfg.active:
        reason = "steps=0"
    if reason is not None:
        try:
            loss = data.eval_loss(student, teacher)
        except Exception:  # noqa: BLE001 -- e.g. fp16 student fed float32 inputs: nothing to report
            loss = None
        result.update(distill_loss_before=loss, distill_loss_after=loss, skipped=reason,
                      distill_seconds=round(time.perf_counter() - t0, 3))
        return result

    if data.trim.names and not data.trim_is_exact(teacher):
        data.trim.disable()
    before = data.eval_loss(student, teacher)
    done, stopped, kept = _train(student, teacher, params, data, cfg, seed, schedule)
    after = data.eval_loss(student, teacher)
    result.update(distill_loss_before=before, distill_loss_after=after, distill_steps=done, distill_schedule=schedule,
                  distill_seconds=round(time.perf_counter() - t0, 3),
                  distill_seq_trim=round(sum(kept) / len(kept), 4) if kept else 1.0)
    if stopped:
        result["distill_stopped"] = stopped
    return result


def _check(cfg: "DistillConfig", calib: dict, input_names: list[str]) -> None:
    """`ConfigError` for settings or data distillation cannot use."""
    import numpy as np

    if cfg.steps < 0 or not (cfg.lr > 0) or cfg.batch < 1 or (cfg.max_seconds is not None and not cfg.max_seconds > 0):
        raise ConfigError("distill: steps must be >= 0, lr > 0, batch >= 1 and max_seconds > 0 "
                          f"(got steps={cfg.steps}, lr={cfg.lr}, batch={cfg.batch}, max_seconds={cfg.max_seconds})")
    missing = [n for n in input_names if n not in calib]
    if missing:
        raise ConfigError(f"distill: calibration data lacks input(s) {missing}; it has {sorted(calib)}")
    if min(int(np.asarray(calib[k]).shape[0]) for k in input_names) == 0:
        raise ConfigError("distill: calibration data is empty")


class _Batches:
    """The distillation data as tensors: training batches (padding trimmed where that changes nothing) and the
    fixed evaluation subset the losses before and after are measured on."""

    def __init__(self, calib: dict, input_names: list[str], device):
        import numpy as np
        import torch

        self.names = input_names
        self.n = n = min(int(np.asarray(calib[k]).shape[0]) for k in input_names)
        self.device = device or torch.device("cpu")
        self.arrays = {k: torch.from_numpy(np.ascontiguousarray(calib[k][:n])) for k in input_names}
        for k, a in self.arrays.items():
            if a.is_floating_point():
                self.arrays[k] = a.float()
        self.trim = SequenceTrim(self.arrays, input_names)
        self.eval_idx = torch.arange(min(n, EVAL_SAMPLES))

    def batch(self, idx, cut: bool = True) -> tuple:
        x = {k: self.arrays[k][idx] for k in self.names}
        x = self.trim(x) if cut else x
        return tuple(x[k].to(self.device) for k in self.names)

    def _eval_batches(self):
        for s in range(0, len(self.eval_idx), EVAL_BATCH):
            yield self.eval_idx[s:s + EVAL_BATCH]

    def trim_is_exact(self, teacher) -> bool:
        """The teacher gives the same outputs on cut and uncut batches of the evaluation subset."""
        import torch

        with torch.no_grad():
            for idx in self._eval_batches():
                try:
                    a, b = _float_outputs(teacher(*self.batch(idx))), _float_outputs(teacher(*self.batch(idx, cut=False)))
                except Exception:  # noqa: BLE001 -- the model needs its full width: train uncut
                    return False
                if len(a) != len(b) or any(x.shape != y.shape or not torch.allclose(x, y, atol=TRIM_ATOL)
                                           for x, y in zip(a, b)):
                    return False
        return True

    def eval_loss(self, student, teacher) -> float:
        import torch

        student.eval()
        total, count = 0.0, 0
        with torch.no_grad():
            for idx in self._eval_batches():
                x = self.batch(idx)
                total += float(_loss(student(*x), teacher(*x))) * len(idx)
                count += len(idx)
        return total / count


def lr_at(step: int, steps: int, lr: float, schedule: str = SCHEDULE) -> float:
    """The learning rate of step ``step`` (0-based) of ``steps``: ``lr`` throughout ("constant"), or ``lr`` on a
    half cosine from ``lr`` at the first step towards 0 after the last ("cosine")."""
    import math

    if schedule == "constant" or steps <= 0:
        return lr
    return lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))


def _train(student, teacher, params: list, data: _Batches, cfg: "DistillConfig", seed: int,
           schedule: str = SCHEDULE) -> tuple[int, str | None, list]:
    """Adam on the MSE to the teacher's outputs for ``cfg.steps`` seeded batches (normalisation layers frozen,
    gradients clipped, the learning rate by `lr_at`); (steps done, why it stopped early or None, the kept share of
    each trimmed batch)."""
    import torch

    flags = [p.requires_grad for p in params]
    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm)
    bs = min(int(cfg.batch), data.n)
    done, stopped, kept = 0, None, []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        try:
            for p in params:
                p.requires_grad_(True)
            opt = torch.optim.Adam(params, lr=float(cfg.lr))
            student.train()
            for m in student.modules():
                if isinstance(m, norm_types):
                    m.eval()
            t_train = time.perf_counter()
            with torch.enable_grad():
                for step in range(int(cfg.steps)):
                    if cfg.max_seconds is not None and time.perf_counter() - t_train > cfg.max_seconds:
                        stopped = "max_seconds"
                        break
                    for group in opt.param_groups:
                        group["lr"] = lr_at(step, int(cfg.steps), float(cfg.lr), schedule)
                    x = data.batch(torch.randint(0, data.n, (bs,), generator=g))
                    if data.trim.names:
                        kept.append(x[data.names.index(MASK_INPUT)].shape[1] / data.arrays[MASK_INPUT].shape[1])
                    with torch.no_grad():
                        target = teacher(*x)
                    loss = _loss(student(*x), target)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
                    opt.step()
                    done += 1
        finally:
            student.eval()
            for p, f in zip(params, flags):
                p.requires_grad_(f)
            for p in params:
                p.grad = None
    return done, stopped, kept


# --------------------------------------------------------------------------- staged (multi-fidelity) distillation

STAGES: tuple[int, ...] = (100, 300, 1000, 3000)  # step counts after which a student is judged and cached
SLACK = 2.0  # a student is stopped when even an optimistic extrapolation of its curve ends above SLACK x the bound
# the fastest decay the extrapolation allows (loss ~ steps^-MAX_DECAY): each stage anneals its learning rate from
# the top again, and digits-cnn's students went 4-25x lower from 100 to 1000 steps, 3-6x from 100 to 300
# (experiments/results/student-stages-2026-12-07-103620.md): faster than 1/steps
MAX_DECAY = 2.0


class DistillStopped(CandidateFailed):
    """A staged distillation stopped a student that cannot reach the quality bound; ``detail`` holds the steps
    reached, the quality loss there, the curve and the extrapolated loss at the steps asked for."""

    def __init__(self, message: str, detail: dict[str, Any]):
        super().__init__(FailReason.DISTILL_STOPPED, message)
        self.detail = detail


def stage_plan(steps: int, stages: tuple[int, ...] = STAGES) -> list[int]:
    """The step counts a distillation of ``steps`` steps passes through: every stage below it, then ``steps``."""
    return [s for s in stages if s < steps] + [int(steps)]


def predicted_loss(curve: list[tuple[int, float]], steps: int) -> float:
    """An optimistic extrapolation of a quality-loss curve ``[(steps, loss), ...]`` to ``steps`` steps: a power
    law through its last two points, its decay capped at steps^-`MAX_DECAY` (and that from a single point; when the
    last two points rise, the last loss stands)."""
    import math

    s1, l1 = curve[-1]
    if l1 <= 0 or steps <= s1:
        return l1
    decay = MAX_DECAY
    if len(curve) >= 2:
        s0, l0 = curve[-2]
        if l0 > 0 and s1 > s0:
            decay = min(MAX_DECAY, max(0.0, math.log(l0 / l1) / math.log(s1 / s0)))
    return l1 * (steps / s1) ** -decay


def hopeless_curve(curve: list[tuple[int, float]], steps: int, bound: float, slack: float = SLACK) -> bool:
    """True when the student whose losses so far are ``curve`` cannot reach ``bound`` by ``steps`` steps."""
    return bool(curve) and curve[-1][1] > bound and predicted_loss(curve, steps) > slack * bound


def distill_staged(student, teacher, cfg: "DistillConfig", calib, input_names: list[str], *, judge=None,
                   bound: float | None = None, load=None, save=None) -> dict[str, Any]:
    """`distill` in the stages of `stage_plan` (issue 28): each stage a fresh Adam on batches seeded by its first
    step, so a student continued from a stage equals one trained through it.  After each stage
    ``save(steps, state_dict)`` caches the student, and after each but the last ``judge(student)`` measures its
    quality loss; a student
    `hopeless_curve` says cannot reach ``bound`` is stopped (`DistillStopped`).  ``load(steps)`` returns a cached
    student's state_dict (or None): training continues from the latest stage cached."""
    from dataclasses import replace

    plan = stage_plan(int(cfg.steps))
    start = 0
    if load is not None:
        for b in reversed(plan):
            state = load(b)
            if state is not None:
                student.load_state_dict(state)
                start = b
                break
    resumed, curve, first, last = start, [], None, None
    t0 = time.perf_counter()
    for b in plan:
        if b <= start:
            continue
        left = None if cfg.max_seconds is None else cfg.max_seconds - (time.perf_counter() - t0)
        if left is not None and left <= 0:
            last = {**(last or {}), "distill_stopped": "max_seconds"}
            break
        info = distill(student, teacher, replace(cfg, steps=b - start, max_seconds=left), calib, input_names,
                       seed=SEED + start)
        first = first or info
        last = info
        if info.get("skipped") or info.get("distill_stopped"):
            start += int(info.get("distill_steps", 0))
            break
        start = b
        if save is not None:  # every stage reached, the last too: a longer request (or a rebuild) starts from it
            save(b, student.state_dict())
        if b < cfg.steps:
            if judge is not None:
                curve.append((b, float(judge(student))))
                if bound is not None and hopeless_curve(curve, int(cfg.steps), bound):
                    predicted = predicted_loss(curve, int(cfg.steps))
                    raise DistillStopped(
                        f"distillation stopped at {b} of {cfg.steps} steps: quality loss {curve[-1][1]:.3g}, "
                        f"at best ~{predicted:.3g} by {cfg.steps} steps against the bound {bound:.3g}",
                        {"steps": b, "quality_loss": curve[-1][1], "predicted_loss": predicted, "curve": curve,
                         "resumed_from": resumed})
    result = dict(last or {"distill_loss": "mse"})
    if first is not None:
        result["distill_loss_before"] = first.get("distill_loss_before")
    result.update(distill_steps=start, distill_seconds=round(time.perf_counter() - t0, 3),
                  distill_resumed_from=resumed, distill_stages=len(curve))
    if curve:
        result["distill_curve"] = curve
    return result
