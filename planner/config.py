"""Frozen, hashable configurations of one candidate deployment.

A `TrialConfig` is what `space.sample` produces and what every later stage
(transforms, backend, measurement, export) consumes.  It is deliberately a
separate type from the search space: a config holds values, never ranges.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

Options = tuple[tuple[str, Any], ...]


def freeze_options(options: dict[str, Any] | None) -> Options:
    return tuple(sorted((options or {}).items()))


@dataclass(frozen=True)
class PruneConfig:
    """Structured/unstructured pruning. ``method='none'`` or ``ratio == 0`` means no pruning."""

    method: str = "none"  # none | l1 | l2 | magnitude | 2:4 | heads
    ratio: float = 0.0
    round_to: int = 1

    @property
    def active(self) -> bool:
        return self.method != "none" and (self.ratio > 0 or self.method == "2:4")


def round_keep(n: int, ratio: float, round_to: int = 1) -> int:
    """How many of ``n`` units (channels, heads, FFN neurons) pruning at ``ratio`` keeps: >= 1, rounded up to a
    multiple of round_to where possible, <= n (`planner.transforms.prune` prunes by it; `planner.space` predicts
    pruned widths by it)."""
    import math

    keep = max(1, int(round(n * (1.0 - ratio))))
    if round_to > 1:
        keep = int(math.ceil(keep / round_to) * round_to)
    return min(n, keep)


@dataclass(frozen=True)
class QuantConfig:
    """Quantization scheme and its scheme-specific options (e.g. calibration method)."""

    scheme: str = "none"  # none | fp16 | bf16 | int8_dynamic | int8_static | ...
    options: Options = ()

    @property
    def active(self) -> bool:
        return self.scheme != "none"

    def opts(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class DistillConfig:
    """Optional knowledge-distillation recovery after pruning/quantization."""

    steps: int = 0
    lr: float = 1e-4
    batch: int = 16  # training minibatch (fewer when the calibration data is smaller)
    max_seconds: float | None = None  # stop after this much training time (the steps done are recorded)

    @property
    def active(self) -> bool:
        return self.steps > 0


@dataclass(frozen=True)
class ServingConfig:
    """How the engine is served (planner.measure.serving), for a target that declares traffic: ``instances``
    engine instances (OpenVINO streams with an infer request each, ONNX Runtime sessions), ``threads`` per
    instance (0: the target's threads shared out), and dynamic batching of up to ``max_batch`` requests, waiting
    at most ``max_queue_delay_us`` for them (``max_batch`` 1: none)."""

    instances: int = 1
    threads: int = 0
    max_batch: int = 1
    max_queue_delay_us: int = 0

    @property
    def batching(self) -> bool:
        return self.max_batch > 1

    def threads_per_instance(self, total: int) -> int:
        return self.threads or max(1, total // self.instances)

    def describe(self) -> str:
        out = f"x{self.instances}" + (f",{self.threads}t" if self.threads else "")
        return out + (f",batch<={self.max_batch}/{self.max_queue_delay_us}us" if self.batching else "")


@dataclass(frozen=True)
class TrialConfig:
    backend: str
    batch_size: int
    backend_options: Options = ()
    prune: PruneConfig = field(default_factory=PruneConfig)
    quant: QuantConfig = field(default_factory=QuantConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    serving: ServingConfig | None = None  # set when the target declares traffic

    def options(self) -> dict[str, Any]:
        return dict(self.backend_options)

    @property
    def precision(self) -> str:
        from planner.schemes import precision_of

        return precision_of(self.quant.scheme)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["backend_options"] = dict(self.backend_options)
        d["quant"]["options"] = dict(self.quant.options)
        if self.serving is None:  # absent, not null: a config without traffic keeps the key it always had
            del d["serving"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialConfig":
        q = dict(d.get("quant") or {})
        q["options"] = freeze_options(q.get("options"))
        return cls(
            backend=d["backend"],
            batch_size=int(d["batch_size"]),
            backend_options=freeze_options(d.get("backend_options")),
            prune=PruneConfig(**(d.get("prune") or {})),
            quant=QuantConfig(**q),
            distill=DistillConfig(**(d.get("distill") or {})),
            serving=ServingConfig(**d["serving"]) if d.get("serving") else None,
        )

    def flat(self) -> dict[str, Any]:
        """Flattened ``a.b`` keys, for MLflow params and tables."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out

    def key(self, network: tuple | None = None) -> str:
        """Stable content hash of the config (16 hex chars).  ``network``: what its pruning builds of the model
        (`planner.space.pruned_network`), then standing for the pruning settings: configs that prune the model to the
        same network are one deployment."""
        d = self.to_dict()
        if network is not None and self.prune.active:
            d["prune"] = {"network": list(network)}
        blob = json.dumps(d, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        """Short human label, e.g. ``onnxruntime[graph_optimization_level=all] int8_static[per_channel=True]
        prune:l1=0.3[round_to=8] distill=1000[lr=0.003]``: two configs with the same label are the same config."""
        opts = ",".join(f"{k}={v}" for k, v in self.backend_options)
        parts = [f"{self.backend}[{opts}]" if opts else self.backend]
        if self.quant.active:
            qopts = ",".join(f"{k}={v}" for k, v in self.quant.options)
            parts.append(f"{self.quant.scheme}[{qopts}]" if qopts else self.quant.scheme)
        if self.prune.active:
            rt = f"[round_to={self.prune.round_to}]" if self.prune.round_to > 1 else ""
            parts.append(f"prune:{self.prune.method}={self.prune.ratio:g}{rt}")
        if self.distill.active:
            parts.append(f"distill={self.distill.steps}[lr={self.distill.lr:g}]")
        if self.serving is not None:
            parts.append(f"serve:{self.serving.describe()}")
        return " ".join(parts)
