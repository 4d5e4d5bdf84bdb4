"""What kind of study the orchestrator runs: the differences between studies of tensor models (one timed call per
batch) and decoder workloads (TTFT/TPOT, `planner.llm.study.DecoderKind`) as one object the orchestrator asks.

The orchestrator (`planner.search.study`) holds one `StudyKind` and never branches on the kind itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from planner.config import TrialConfig
    from planner.measure.jobs import PrepareJob, TrialJob
    from planner.space import SearchSpace
    from planner.target import Target


class StudyKind:
    """A study of a tensor model: latency of one batch, quality against the fp32 outputs."""

    name_suffix = ""  # appended to the default study name
    workload = None  # a decoder study's planner.llm.workload.Workload
    reference_batch_fallback = True  # a reference that crashes at its batch is computed again at batch 1
    remeasure_refusal: str | None = None  # why `planner confirm` refuses this kind (None: it re-measures)

    def space(self, space: "SearchSpace") -> "SearchSpace":
        """The space as this kind searches it."""
        return space

    def default_objectives(self) -> tuple[str, ...]:
        from planner.record.objectives import DEFAULT_OBJECTIVES

        return DEFAULT_OBJECTIVES

    def check_backend(self, backend: str) -> str | None:
        """Why ``backend`` cannot serve this kind of study (None: it can)."""
        import planner.backends.registry as registry

        if registry.get(backend).decoder_only:  # llama.cpp: it builds LLM decoders only
            return "builds LLM decoders only: give a workload (--workload FILE)"
        return None

    def check(self, cfg: "TrialConfig") -> str | None:
        """Why ``cfg`` cannot run in this kind of study, before any worker starts (None: it can)."""
        return None

    def prepare_job(self, **fields: Any) -> "PrepareJob":
        from planner.measure.jobs import PrepareJob

        return PrepareJob(**fields)

    def trial_job(self, **fields: Any) -> "TrialJob":
        from planner.measure.jobs import TrialJob

        return TrialJob(**fields)

    def study_attrs(self) -> dict[str, Any]:
        """What a new study records about its kind (Optuna user attributes)."""
        return {}

    def metrics(self, res: dict[str, Any], cfg: "TrialConfig", target: "Target") -> tuple[dict[str, float], dict[str, float]]:
        """(metrics, Optuna constraint values ≤ 0 when feasible) of a worker's ok result."""
        from planner.record.metrics import metrics_of
        from planner.record.objectives import constraints

        m = metrics_of(res, cfg, target)
        return m, constraints(m, target)
