"""Hardware targets: validated YAML (targets/*.yaml) and a probe of this host."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

import planner.backends.registry as registry
from planner.errors import ConfigError, did_you_mean
from planner.schemes import PRECISIONS, gpu_precisions
from planner.yamlio import read_yaml, validate



class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GPU(_Strict):
    name: str = Field(description="GPU model name as nvidia-smi reports it, e.g. 'NVIDIA A100'")
    compute_capability: str = Field(pattern=r"^\d+\.\d+$")
    memory_gb: float = Field(gt=0)
    sm_count: Optional[int] = Field(default=None, gt=0)


class Device(_Strict):
    kind: Literal["cpu", "cuda"]
    cpu_isa: list[str] = Field(default_factory=list, description="ISA features, e.g. avx2, avx512f, avx512_vnni")
    gpu: Optional[GPU] = None

    @model_validator(mode="after")
    def _gpu_iff_cuda(self):
        if self.kind == "cuda" and self.gpu is None:
            raise ValueError("device.kind 'cuda' needs a 'gpu' section (name, compute_capability, memory_gb)")
        if self.kind == "cpu" and self.gpu is not None:
            raise ValueError("device.kind 'cpu' must not have a 'gpu' section")
        return self


class Constraints(_Strict):
    latency_slo_ms: Optional[float] = Field(default=None, gt=0, description="latency bound per batch, ms")
    latency_percentile: Literal["p50", "p90", "p99"] = "p50"
    max_quality_loss: float = Field(default=0.01, ge=0, le=1)
    quality_loss_mode: Literal["absolute", "relative"] = Field(
        default="absolute", description="relative: a metric's drop (label accuracy, evaluator metric) divided by its fp32 value")
    max_memory_mb: Optional[float] = Field(default=None, gt=0)


class Protocol(_Strict):
    warmup_iters: int = Field(default=10, ge=0)
    warmup_seconds: float = Field(default=0.2, ge=0)
    min_repeats: int = Field(default=100, ge=3)
    min_seconds: float = Field(default=1.0, ge=0)
    max_seconds: float = Field(default=10.0, gt=0)
    cv_threshold: float = Field(default=0.10, gt=0, description="re-measure above this coefficient of variation")
    max_remeasure: int = Field(default=1, ge=0)

    @model_validator(mode="after")
    def _bounds(self):
        if self.max_seconds < self.min_seconds:
            raise ValueError("max_seconds must be >= min_seconds")
        return self


class Traffic(_Strict):
    """The requests a deployment is served (planner.measure.serving): with it, the study's latency is the served
    latency at this traffic, queueing included; without it, one request at a time on an idle engine."""

    arrival: Literal["poisson", "closed"] = Field(
        default="poisson", description="poisson: open loop at `rate`; closed: `concurrency` clients, each waiting for its answer")
    rate: Optional[float] = Field(default=None, gt=0, description="requests/s (poisson)")
    concurrency: Optional[int] = Field(default=None, ge=1, description="clients (closed)")
    request_batch: int = Field(default=1, ge=1, description="samples per request")
    lengths: Literal["full", "data"] = Field(
        default="full", description="full: every request padded to the model's input length; data: each request "
        "at its own sample's length (inputs with a `length_axis`: token ids, masks), on engines that take any length")
    length_multiple: int = Field(default=8, ge=1, description="lengths: data: requests padded to a multiple of this "
                                                              "(a batch holds requests of one padded length)")
    duration_s: float = Field(default=4.0, gt=0, description="measured seconds per load point, after the warm-up")
    warmup_s: float = Field(default=0.5, ge=0, description="seconds of requests left out of the figures")
    drain_s: float = Field(default=2.0, gt=0, description="how long after the last arrival answers are waited for")
    seed: int = 0
    percentile: Literal["p50", "p90", "p99"] = Field(default="p99", description="the served percentile the study minimizes")
    slo_ms: Optional[float] = Field(default=None, gt=0, description="served-latency SLO at `percentile`, ms")
    rate_search_steps: int = Field(default=3, ge=0, description="load points beyond the target's rate in the "
                                                                "search for the highest rate sustained within the SLO")

    @model_validator(mode="after")
    def _kind(self):
        if self.arrival == "poisson" and self.rate is None:
            raise ValueError("arrival 'poisson' needs 'rate' (requests/s)")
        if self.arrival == "closed" and self.concurrency is None:
            raise ValueError("arrival 'closed' needs 'concurrency' (clients)")
        if self.arrival == "closed" and self.rate is not None:
            raise ValueError("arrival 'closed' takes 'concurrency', not 'rate'")
        return self

    @property
    def point_seconds(self) -> float:
        """Seconds one load point takes (warm-up and measured window; the drain is waited only when behind)."""
        return self.warmup_s + self.duration_s

    def describe(self) -> str:
        load = f"{self.rate:g} req/s" if self.arrival == "poisson" else f"{self.concurrency} clients"
        return (f"{self.arrival} {load}, {self.request_batch} sample(s)/request"
                + (f", own lengths (padded to a multiple of {self.length_multiple})" if self.lengths == "data" else ""))


class Target(_Strict):
    name: str
    description: str = ""
    device: Device
    threads: Optional[int] = Field(default=None, ge=1, description="intra-op threads; null = all cores of the host")
    precisions: list[str] = Field(default_factory=lambda: ["fp32"])
    backends: list[str] = Field(default_factory=lambda: list(registry.REGISTRY))
    tvm_target: Optional[str] = None
    max_batch_size: int = Field(default=256, ge=1)
    constraints: Constraints = Field(default_factory=Constraints)
    measurement: Protocol = Field(default_factory=Protocol)
    traffic: Optional[Traffic] = Field(default=None, description="served traffic; none: one request at a time")

    @model_validator(mode="after")
    def _traffic_batch(self):
        if self.traffic is not None and self.traffic.request_batch > self.max_batch_size:
            raise ValueError(f"traffic.request_batch ({self.traffic.request_batch}) exceeds max_batch_size ({self.max_batch_size})")
        return self

    @field_validator("precisions")
    @classmethod
    def _precisions(cls, v):
        bad = [p for p in v if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision {bad[0]!r}; {did_you_mean(bad[0], PRECISIONS)}")
        if "fp32" not in v:
            raise ValueError("precisions must include fp32 (the reference)")
        return v

    @field_validator("backends")
    @classmethod
    def _backends(cls, v):
        known = registry.all_backends()  # built-in backends are known whether or not this install has them
        bad = [b for b in v if b not in known]
        if bad:
            raise ValueError(f"unknown backend {bad[0]!r}; {did_you_mean(bad[0], known)}")
        return v

    @property
    def is_gpu(self) -> bool:
        return self.device.kind == "cuda"

    def thread_count(self) -> int:
        return self.threads or os.cpu_count() or 1

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json", exclude_none=True), sort_keys=False)


TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"


def builtin_targets() -> dict[str, Path]:
    return {p.stem: p for p in sorted(TARGETS_DIR.glob("*.yaml"))} if TARGETS_DIR.is_dir() else {}


def load_target(ref: str | Path) -> Target:
    """Load a target from a YAML path or a built-in name (``cpu``, ``a100``, ...)."""
    p = Path(ref)
    if not p.suffix and not p.exists():
        known = builtin_targets()
        if str(ref) not in known:
            raise ConfigError(f"target '{ref}': not a file nor a built-in target; {did_you_mean(str(ref), known)}")
        p = known[str(ref)]
    return validate(Target, read_yaml(p), str(p))


# ---------------------------------------------------------------- host probe


CPU_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                 "amx_tile", "amx_int8", "amx_bf16", "amx_fp16", "asimd", "sve")


def cpu_isa(cpuinfo: str | None = None) -> list[str]:
    """The ISA features of CPU_ISA_FLAGS that ``/proc/cpuinfo`` (or the ``cpuinfo`` text given) lists."""
    try:
        text = Path("/proc/cpuinfo").read_text() if cpuinfo is None else cpuinfo
        flags = set(re.findall(r"^(?:flags|Features)\s*:\s*(.*)$", text, re.M)[0].split())
    except (OSError, IndexError):
        return []
    return [f for f in CPU_ISA_FLAGS if f in flags]


def cpu_precisions(isa: list[str], machine: str | None = None) -> list[str]:
    """The precisions a CPU with these ISA features runs natively: fp32 and int8 always (int8 kernels exist
    everywhere; VNNI/AMX-INT8 only make them faster), bf16 only with AVX512-BF16 or AMX-BF16 (elsewhere bf16 is
    emulated and slower than fp32), int4 weight-only with AVX2 or on ARM (torch's CPU int4 kernel)."""
    machine = (machine or platform.machine()).lower()
    precs = ["fp32", "int8"]
    if "avx512_bf16" in isa or "amx_bf16" in isa:
        precs.append("bf16")
    if "avx2" in isa or machine in ("aarch64", "arm64"):
        precs.append("int4")  # weight-only int4: torch's CPU int4 kernel (planner.transforms.int4)
    return precs


def cpu_name() -> str:
    try:
        m = re.search(r"^model name\s*:\s*(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
        return m.group(1).strip() if m else platform.processor()
    except OSError:
        return platform.processor() or platform.machine()


def probe_gpus() -> list[dict]:
    """GPUs visible through nvidia-smi (no torch import). Empty list when none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,compute_cap,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    gpus = []
    for line in out.strip().splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) >= 3:
            try:
                gpus.append({"name": parts[0], "compute_capability": parts[1], "memory_gb": round(float(parts[2]) / 1024, 1)})
            except ValueError:
                continue
    return gpus


GPU_ENV_FIELDS = ("name", "driver_version", "pstate", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
                  "power.limit", "temperature.gpu")


def parse_gpu_environment(csv_text: str) -> list[dict]:
    """Rows of ``nvidia-smi --query-gpu=<GPU_ENV_FIELDS> --format=csv,noheader,nounits`` as dicts
    (numbers as numbers; '[N/A]' and the like as None)."""
    rows = []
    for line in csv_text.strip().splitlines():
        parts = [x.strip() for x in line.split(",")]
        if len(parts) != len(GPU_ENV_FIELDS):
            continue
        row: dict[str, Any] = {}
        for key, raw in zip(GPU_ENV_FIELDS, parts):
            if raw.startswith("[") or raw in ("", "N/A"):
                row[key] = None
                continue
            try:
                row[key] = float(raw) if key not in ("name", "driver_version", "pstate") else raw
            except ValueError:
                row[key] = raw
        rows.append(row)
    return rows


def gpu_environment() -> list[dict]:
    """Driver, performance state, current/max SM and memory clocks (MHz), power limit and temperature of each
    GPU, for the record beside a GPU measurement (clocks below max mean a throttled or idle-clocked run).
    Empty without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(GPU_ENV_FIELDS)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return parse_gpu_environment(out)


def torch_gpu_properties(index: int = 0) -> Any:
    """``torch.cuda.get_device_properties(index)``, or None where torch, its CUDA build or the device is missing
    (imports torch: for `planner probe`, never at `import planner`)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch

        if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
            return None
        return torch.cuda.get_device_properties(index)
    except Exception:  # a broken CUDA install: the probe still describes the GPU from nvidia-smi
        return None


def gpu_section(smi: dict, props: Any = None) -> dict:
    """The target's ``gpu`` section: nvidia-smi's row (name, compute capability, memory), with the number of
    streaming multiprocessors from torch's device properties (``multi_processor_count``; nvidia-smi does not
    report it) when they describe the same GPU."""
    g = dict(smi)
    if props is not None and str(props.name).lower() == str(smi.get("name", "")).lower():
        g["sm_count"] = int(props.multi_processor_count)
    return g


def probe_host() -> Target:
    """Describe this host as a Target (first GPU if any, else the CPU)."""
    gpus = probe_gpus()
    name = platform.node() or "host"
    if gpus:
        g = gpus[0]
        sm = g["compute_capability"].replace(".", "")
        return Target(
            name=f"{name}-gpu",
            description=f"probed: {g['name']}",
            device=Device(kind="cuda", gpu=GPU(**gpu_section(g, torch_gpu_properties(0)))),
            precisions=gpu_precisions(g["compute_capability"]),
            tvm_target=f"cuda -arch=sm_{sm}",
        )
    isa = cpu_isa()
    precs = cpu_precisions(isa)
    cores = os.cpu_count() or 1
    mcpu = _llvm_mcpu(isa)
    return Target(
        name=f"{name}-cpu",
        description=f"probed: {cpu_name()}",
        device=Device(kind="cpu", cpu_isa=isa),
        threads=cores,
        precisions=precs,
        backends=registry.names_for_device("cpu"),
        tvm_target=f"llvm -mcpu={mcpu} -num-cores={cores}" if mcpu else f"llvm -num-cores={cores}",
    )


def _llvm_mcpu(isa: list[str]) -> str | None:
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    if "amx_tile" in isa:
        return "sapphirerapids"
    if "avx512_vnni" in isa:
        return "cascadelake"
    if "avx512f" in isa:
        return "skylake-avx512"
    if "avx2" in isa:
        return "haswell"
    return "x86-64"


def check_host(target: Target, allow_mismatch: bool = False) -> None:
    """Fail fast when the target's device is not on this host."""
    if not target.is_gpu:
        return
    gpus = probe_gpus()
    want = target.device.gpu.name  # type: ignore[union-attr]
    if not gpus:
        raise ConfigError(
            f"target '{target.name}' needs an NVIDIA GPU ({want}) but this host has none "
            "(nvidia-smi not found or no device); use a CPU target such as targets/cpu.yaml"
        )
    if allow_mismatch:
        return
    have = [g["name"] for g in gpus]
    if not any(want.lower() in h.lower() or h.lower() in want.lower() for h in have):
        raise ConfigError(
            f"target '{target.name}' is for {want} but this host has {', '.join(have)}; "
            "run `planner probe` for a matching target, or pass --allow-mismatch"
        )
