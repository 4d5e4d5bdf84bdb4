"""LLM serving workload: prompt/generation lengths, concurrency, latency SLOs and a quality bound.

A workload YAML (see ``experiments/chat.yaml``)::

    name: chat
    prompt_lengths: [128, 256]      # tokens per prompt; every length is measured
    generation_length: 64           # tokens generated per request (the first comes from prefill)
    batch_sizes: [1, 4]             # concurrent sequences decoded together (the search's batch axis)
    slo:
      ttft_ms: 300                  # time to first token: prefill of the prompt
      tpot_ms: 40                   # time per output token: one decode step
      percentile: p99               # p50 | p90 | p99 of the per-call samples
    quality:
      max_disagreement: 0.2         # and/or max_kl (nats/token); at least one
    eval:                           # teacher-forced quality set (defaults shown)
      sequences: 8
      prompt_length: null           # null: the shortest prompt length
      forced_tokens: 16
      seed: 0

TTFT is bounded for every prompt length (the longest binds); TPOT for every prompt length
over the whole generation (the longest context binds).  The quality metric is measured
teacher-forced against fp32 eager (see `planner.llm.quality`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from planner.errors import ConfigError
from planner.yamlio import read_yaml, validate

PERCENTILES = ("p50", "p90", "p99")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SLO(_Strict):
    ttft_ms: Optional[float] = Field(default=None, gt=0, description="bound on time to first token (prefill), ms")
    tpot_ms: Optional[float] = Field(default=None, gt=0, description="bound on time per output token (decode step), ms")
    percentile: Literal["p50", "p90", "p99"] = "p99"


class QualityBound(_Strict):
    max_disagreement: Optional[float] = Field(
        default=None, ge=0, le=1, description="max fraction of positions whose greedy next token differs from fp32")
    max_kl: Optional[float] = Field(default=None, ge=0, description="max mean KL(fp32 || candidate), nats per token")

    @model_validator(mode="after")
    def _one(self):
        if self.max_disagreement is None and self.max_kl is None:
            raise ValueError("give max_disagreement, max_kl or both")
        return self

    @property
    def kl_bound(self) -> float | None:
        """The KL bound when it comes second (both given: ``max_disagreement`` is `metric`, KL an extra constraint)."""
        return float(self.max_kl) if self.max_disagreement is not None and self.max_kl is not None else None

    @property
    def metric(self) -> str:
        """Key in the quality dict that the bound applies to."""
        return "disagreement" if self.max_disagreement is not None else "kl_mean"

    @property
    def bound(self) -> float:
        return float(self.max_disagreement if self.max_disagreement is not None else self.max_kl)  # type: ignore[arg-type]


class EvalSet(_Strict):
    sequences: int = Field(default=8, ge=1, le=256)
    prompt_length: Optional[int] = Field(
        default=None, ge=1, description="prompt tokens before the forced ones; default: the shortest workload prompt "
                                        "(a shape the runtime is already compiled for)")
    forced_tokens: int = Field(default=16, ge=1)
    seed: int = 0


class Workload(_Strict):
    name: str = "workload"
    description: str = ""
    prompt_lengths: list[int] = Field(min_length=1, description="prompt lengths in tokens, each measured")
    generation_length: int = Field(ge=1, description="tokens generated per request")
    batch_sizes: list[int] = Field(default_factory=lambda: [1], min_length=1,
                                   description="concurrent sequences decoded together")
    slo: SLO = Field(default_factory=SLO)
    quality: QualityBound = Field(default_factory=lambda: QualityBound(max_disagreement=0.1))
    eval: EvalSet = Field(default_factory=EvalSet)

    @field_validator("prompt_lengths", "batch_sizes")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x < 1]
        if bad:
            raise ValueError(f"values must be positive integers (got {bad[0]})")
        if len(set(v)) != len(v):
            raise ValueError("values must be distinct")
        return sorted(v)

    @property
    def max_context(self) -> int:
        """Positions a sequence may reach: longest prompt plus the generation."""
        return max(self.prompt_lengths) + self.generation_length

    @property
    def eval_prompt_length(self) -> int:
        return self.eval.prompt_length or min(self.prompt_lengths)

    def check_model(self, max_positions: int, source: str = "workload") -> None:
        """ConfigError when a prompt + generation (or the eval set) does not fit the model's positions."""
        errors = []
        if self.max_context > max_positions:
            errors.append(f"{source}: prompt_lengths max {max(self.prompt_lengths)} + generation_length "
                          f"{self.generation_length} = {self.max_context} exceeds the model's {max_positions} positions")
        ev = self.eval_prompt_length + self.eval.forced_tokens
        if ev > max_positions:
            errors.append(f"{source}: eval prompt length + eval.forced_tokens = {ev} exceeds the model's "
                          f"{max_positions} positions")
        if errors:
            raise ConfigError(errors)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, d: dict, source: str = "workload") -> "Workload":
        return validate(cls, d, source)


def load_workload(path: str | Path) -> Workload:
    """Read and validate a workload YAML; ConfigError lists every problem as 'file: field: message'."""
    return validate(Workload, read_yaml(path), str(path))
