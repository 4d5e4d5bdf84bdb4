"""A decoder study (``planner optimize --workload``), as the orchestrator sees it: the workload's concurrency is
the batch axis, TTFT/TPOT/quality are the default objectives, backends and schemes need a decoder runtime, jobs
carry the workload, metrics and constraints come from the workload replay, and nothing is re-measured."""

from __future__ import annotations

from typing import Any

from planner.search.kind import StudyKind


class DecoderKind(StudyKind):
    reference_batch_fallback = False

    def __init__(self, workload):
        self.workload = workload  # planner.llm.workload.Workload
        self.name_suffix = f"-{workload.name}"
        self.remeasure_refusal = (f"a decoder study (workload {workload.name}) is not re-measured; "
                                  "its TTFT/TPOT come from the workload replay")

    def space(self, space):
        from planner.space import Param

        return space.model_copy(update={"batch_size": Param(choices=list(self.workload.batch_sizes))})

    def default_objectives(self) -> tuple[str, ...]:
        from planner.record.objectives import DEFAULT_LLM_OBJECTIVES

        return DEFAULT_LLM_OBJECTIVES

    def check_backend(self, backend: str) -> str | None:
        from planner.llm.runtimes import check_decoder_config

        return check_decoder_config(backend, "none")

    def check(self, cfg) -> str | None:
        from planner.llm.runtimes import check_decoder_config

        return check_decoder_config(cfg.backend, cfg.quant.scheme)

    def prepare_job(self, **fields: Any):
        from planner.measure.jobs import LlmPrepareJob

        return LlmPrepareJob(**fields, workload=self.workload.to_dict())

    def trial_job(self, **fields: Any):
        from planner.measure.jobs import LlmTrialJob

        return LlmTrialJob(**fields, workload=self.workload.to_dict())

    def study_attrs(self) -> dict[str, Any]:
        return {"workload_spec": self.workload.to_dict()}

    def metrics(self, res, cfg, target):
        """TTFT/TPOT at the workload's percentile and its quality bound; of the target's constraints only memory."""
        from planner.llm.measure import llm_constraints, llm_metrics

        metrics, cons = super().metrics(res, cfg, target)
        metrics.update(llm_metrics(res))
        p = self.workload.slo.percentile
        metrics["ttft_ms"], metrics["tpot_ms"] = metrics[f"ttft_{p}_ms"], metrics[f"tpot_{p}_ms"]
        cons = {**{k: v for k, v in cons.items() if k == "memory"}, **llm_constraints(metrics, self.workload)}
        return metrics, cons
