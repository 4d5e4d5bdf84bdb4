"""What a study is asked to do and what it gives back: its options, each trial's outcome, the result, and the
reporter protocol the console implements.  Plain data, imported by the CLI and the benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from planner.config import TrialConfig
from planner.errors import ConfigError


@dataclass(frozen=True)
class StudyOptions:
    trials: int = 20  # candidates this process measures (a proposal answered from the study as a duplicate is free)
    study_trials: int | None = None  # stop once the study holds this many finished trials (stopped students too), all workers
    timeout: float | None = None  # seconds for the whole study
    trial_timeout: float = 900.0  # seconds per candidate (compile + measure)
    study_name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    sampler: str = "tpe"
    seed: int | None = 0
    objectives: tuple[str, ...] | None = None  # default: latency,quality (ttft,tpot,quality with a workload)
    eval_samples: int = 32
    early_exit_factor: float | None = 20.0  # stop measuring a candidate this many times slower than the best at its batch
    allow_mismatch: bool = False
    max_duplicates: int = 25  # consecutive already-measured suggestions before we call the space exhausted
    heartbeat_seconds: int = 30  # trials whose worker stops beating for 3 intervals are failed by other workers
    retries: int = 0  # re-run a trial that went stale (its worker died) this many times
    compile_workers: int = 1  # candidates compiled at once; measurement stays one at a time (others paused)
    tuning_budget_seconds: float | None = None  # total auto-tuning (TVM MetaSchedule) time for the study
    confirm_top_k: int = 3  # after the loop, re-measure the k fastest feasible trials (0: off; planner.select.confirm)
    confirm_rounds: int = 3  # interleaved rounds of that re-measurement

    def check(self) -> None:
        """`ConfigError` for an option out of range (the flag it came from named)."""
        from planner.search.samplers import SAMPLERS, make_sampler

        if self.sampler not in SAMPLERS:
            make_sampler(self.sampler, None, 1)  # raises ConfigError
        if self.trials < 1:
            raise ConfigError(f"--trials {self.trials}: must be ≥ 1")
        if self.study_trials is not None and self.study_trials < 1:
            raise ConfigError(f"--study-trials {self.study_trials}: must be ≥ 1")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout {self.timeout}: must be > 0 seconds")
        if self.trial_timeout <= 0:
            raise ConfigError(f"--trial-timeout {self.trial_timeout}: must be > 0 seconds")
        if self.confirm_top_k < 0:
            raise ConfigError(f"--confirm {self.confirm_top_k}: must be ≥ 0 (0 turns the re-measurement off)")
        if self.confirm_rounds < 1:
            raise ConfigError(f"--confirm-rounds {self.confirm_rounds}: must be ≥ 1")


@dataclass
class TrialOutcome:
    number: int
    config: TrialConfig | None
    status: str  # ok | infeasible | failed | duplicate | skipped (known hopeless, not measured) | stopped (distillation)
    reason: str | None = None
    message: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None
    composed_of: dict[str, int] | None = None  # a composite's halves: {"engine": trial, "student": trial} (search.compose)


@dataclass
class StudyResult:
    study_name: str
    storage: str
    tracking_uri: str
    experiment: str
    parent_run_id: str | None
    outcomes: list[TrialOutcome]
    front: list  # list[select.pareto.Point]
    home: Path
    stopped_because: str = ""


class Reporter(Protocol):
    def start(self, study_name: str, total: int, info: dict[str, Any]) -> None: ...
    def trial_started(self, number: int, cfg: TrialConfig) -> None: ...
    def trial_done(self, outcome: TrialOutcome) -> None: ...
    def confirming(self, message: str) -> None: ...
    def confirmed(self, summary: dict[str, Any], rows: list[dict[str, Any]]) -> None: ...
    def end(self, result: StudyResult) -> None: ...


class SilentReporter:
    def start(self, study_name, total, info): pass
    def trial_started(self, number, cfg): pass
    def trial_done(self, outcome): pass
    def confirming(self, message): pass
    def confirmed(self, summary, rows): pass
    def end(self, result): pass
