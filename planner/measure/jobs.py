"""The worker protocol: one frozen job type per kind, and the table that says who runs each kind.

The orchestrator builds a job (`PrepareJob`, `TrialJob`, `ConfirmJob`, or their decoder forms), the runner
(`planner.measure.runner`) writes it as ``job.json`` beside the worker's files, and the worker
(`planner.measure.worker`) reads it back with `job_from_dict` and dispatches on its kind through `HANDLERS`.
The JSON is only the wire format: both ends use these types, so a key that one side writes and the other does not
know is an error at once, not a silent default.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar


@dataclass(frozen=True, kw_only=True)
class WorkerJob:
    """What every job carries: the model spec, the target (both as their dicts) and the planner cache."""

    kind: ClassVar[str]
    spec: dict[str, Any]
    target: dict[str, Any]
    cache_dir: str
    result: str = ""  # where the worker writes result.json (set by the runner)
    gate: str | None = None  # the runner's gate folder: measure only after "go" (compile workers, confirmation)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class PrepareJob(WorkerJob):
    """Load the model, record its facts and compute the fp32 reference outputs."""

    kind: ClassVar[str] = "prepare"
    reference: str  # where reference.npz goes
    eval_samples: int = 32
    seed: int = 0
    reference_batch: int | None = None  # None: the worker's default; 1 for a model that only runs at batch 1
    prune_methods: tuple[str, ...] = ()  # the space's pruning methods, each tried once on the model (issue 28)
    prune_ratio: float = 0.5  # at this ratio


@dataclass(frozen=True, kw_only=True)
class TrialJob(WorkerJob):
    """Transform, compile, check quality and time one candidate."""

    kind: ClassVar[str] = "trial"
    config: dict[str, Any]  # TrialConfig.to_dict()
    workdir: str
    reference: str
    output_kind: str = "logits"
    abort_above_ms: float | None = None  # early exit: the median of the first settled samples may not exceed it
    batch_sizes: list[int] = field(default_factory=list)  # what an engine's optimization profile must accept
    model_hash: str | None = None  # the study's prepare computed it: a cached ONNX export is found without building the model


@dataclass(frozen=True, kw_only=True)
class ConfirmJob(WorkerJob):
    """Rebuild one candidate and time it in ``rounds`` gated rounds (planner.select.confirm)."""

    kind: ClassVar[str] = "confirm"
    config: dict[str, Any]
    workdir: str
    reference: str
    rounds: int
    batch_sizes: list[int] = field(default_factory=list)
    model_hash: str | None = None  # as TrialJob's


@dataclass(frozen=True, kw_only=True)
class LlmPrepareJob(PrepareJob):
    """A decoder's reference: greedy tokens and logits on the workload's evaluation prompts (planner.llm)."""

    kind: ClassVar[str] = "llm_prepare"
    workload: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class LlmTrialJob(TrialJob):
    """A decoder candidate measured by the workload's TTFT/TPOT protocol (planner.llm)."""

    kind: ClassVar[str] = "llm_trial"
    workload: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class VerifyJob:
    """Run an exported engine with its own runtime alone (`planner verify`, export's engine description): a
    fresh process that imports neither the planner's search nor torch unless the engine is a torch program."""

    kind: ClassVar[str] = "verify"
    engine_dir: str
    engine_file: str
    batch_size: int = 1
    device: str = "cpu"
    threads: int = 1
    inputs: list[dict[str, Any]] = field(default_factory=list)  # the model's input specs, in order
    quant_scheme: str = "none"
    samples: str = ""  # samples.npz: in:<name> arrays, ref (reference outputs)
    write_outputs: str | None = None  # save the engine's outputs here (.npy)
    describe: bool = False  # describe the engine (its tensors) for a Triton config
    compare: dict[str, Any] | None = None  # {"atol", "rtol"}: compare with samples.npz's ref
    latency: bool = False  # re-measure latency
    result: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


# kind -> (job type, the function that runs it in the worker, as "module:function" so the worker imports only
# the one it needs: the decoder workloads plug in here without the worker importing planner.llm)
HANDLERS: dict[str, tuple[type, str]] = {
    "prepare": (PrepareJob, "planner.measure.worker:do_prepare"),
    "trial": (TrialJob, "planner.measure.worker:do_trial"),
    "confirm": (ConfirmJob, "planner.measure.worker:do_confirm"),
    "llm_prepare": (LlmPrepareJob, "planner.llm.trial:prepare_llm"),
    "llm_trial": (LlmTrialJob, "planner.llm.trial:run_llm_trial"),
    # its own runner process (`python -m planner.select.verify`): the exported engine alone, no model code
    "verify": (VerifyJob, "planner.select.verify:run_job"),
}


def job_from_dict(d: dict[str, Any]) -> Any:
    """The typed job a ``job.json`` (or a hand-built dict) describes; `ValueError` naming what does not fit."""
    kind = d.get("kind")
    if kind not in HANDLERS:
        raise ValueError(f"unknown job kind {kind!r} (known: {', '.join(HANDLERS)})")
    cls = HANDLERS[kind][0]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names - {"kind"})
    if unknown:
        raise ValueError(f"{kind} job: unknown field(s) {unknown}; valid: {sorted(names)}")
    try:
        return cls(**{k: v for k, v in d.items() if k != "kind"})
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{kind} job: {e}") from None
