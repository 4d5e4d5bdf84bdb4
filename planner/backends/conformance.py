"""The backend conformance suite, importable so a plugin package runs it on its own backend.

Every registered backend passes it in planner's own tests (``tests/backends/test_conformance.py``); a backend
in another package calls it from its tests::

    from planner.backends.conformance import run_conformance

    def test_my_backend_conforms(tmp_path):
        run_conformance(MyBackend, tmp_path)

What it checks: the declarations are well formed (name, devices, input format, options with defaults that
validate), the default config passes `check`, `compile` builds the tiny-mlp zoo model into the declared engine
files, the runtime matches the fp32 model, `load_artifact` reloads the engine files in a fresh runtime with the
same outputs, the bound call runs, and a CPU runtime declares no device copies or CUDA stream.  A failure is an
``AssertionError`` naming what is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from planner.backends.base import Backend
    from planner.target import Target

BATCH = 3


def conformance_target() -> "Target":
    """A one-thread CPU target with a short measurement protocol, allowing every backend that runs on a CPU."""
    from planner.target import Target

    return Target.model_validate({
        "name": "conformance-cpu", "description": "backend conformance (a CPU, one thread)", "device": {"kind": "cpu"},
        "threads": 1, "precisions": ["fp32", "int8"], "tvm_target": "llvm -num-cores=1", "max_batch_size": 16,
        "measurement": {"warmup_iters": 2, "warmup_seconds": 0.0, "min_repeats": 20, "min_seconds": 0.02,
                        "max_seconds": 2.0, "cv_threshold": 10.0, "max_remeasure": 0}})


def check_declarations(cls: type["Backend"]) -> None:
    """The class attributes a backend must declare, well formed."""
    from planner.backends.base import Backend
    from planner.schemes import SCHEMES

    assert isinstance(getattr(cls, "name", None), str) and cls.name, "a backend declares its `name`"
    assert set(cls.devices) <= {"cpu", "cuda"} and cls.devices, f"{cls.name}: devices {cls.devices}"
    assert cls.input_format in ("torch", "onnx"), f"{cls.name}: input_format {cls.input_format!r}"
    assert set(cls.quant_schemes) <= set(SCHEMES), f"{cls.name}: unknown schemes {set(cls.quant_schemes) - set(SCHEMES)}"
    assert "none" in cls.quant_schemes, f"{cls.name}: every backend runs scheme 'none' (fp32)"
    defaults = cls.resolve_options({})  # raises ConfigError when an option has a default that does not validate
    assert set(defaults) == set(cls.options), cls.name
    assert cls.engine_files, f"{cls.name} declares no engine file to export (`engine_files`)"
    assert cls.load_artifact.__func__ is not Backend.load_artifact.__func__, f"{cls.name} declares no `load_artifact`"


def run_conformance(cls: type["Backend"], workdir: Path, target: "Target | None" = None) -> None:
    """Build tiny-mlp with ``cls`` in ``workdir`` and check it as every registered backend is checked."""
    import numpy as np
    import torch

    from planner.config import TrialConfig
    from planner.model import parse_model
    from planner.source import ModelSource

    workdir = Path(workdir)
    target = target or conformance_target()
    check_declarations(cls)
    avail = cls.availability()
    assert avail.usable, f"{cls.name} is not usable here: {avail.detail}"
    assert target.device.kind in cls.devices, f"{cls.name} does not run on {target.device.kind}"
    source = ModelSource(parse_model("tiny-mlp"), workdir / "cache")
    cfg = TrialConfig(cls.name, BATCH)
    why = cls.check(cfg, target, source.format)
    assert why is None, f"{cls.name} refuses its default config: {why}"
    engine = workdir / "engine"
    engine.mkdir(parents=True, exist_ok=True)
    build = cls().compile(source, cfg, target, engine)
    assert build.ok, f"{cls.name} failed to build tiny-mlp: {build.error}"
    assert build.artifacts and all(Path(p).is_file() for p in build.artifacts), f"{cls.name}: artifacts {build.artifacts}"
    feed = source.example_inputs(BATCH, seed=9)
    with torch.inference_mode():
        ref = source.base_module()(*[torch.from_numpy(v) for v in feed.values()]).numpy()
    np.testing.assert_allclose(build.runtime.infer(feed)[0], ref, rtol=1e-4, atol=1e-5,
                               err_msg=f"{cls.name}: outputs differ from the fp32 model")
    written = {Path(p).name for p in build.artifacts}
    assert set(cls.engine_files) <= written, f"{cls.name} declares {cls.engine_files} but wrote {sorted(written)}"
    loaded = cls.load_artifact(engine, batch=BATCH, device="cpu")
    np.testing.assert_allclose(loaded.infer(feed)[0], ref, rtol=1e-4, atol=1e-5,
                               err_msg=f"{cls.name}: the engine reloaded by load_artifact differs from the fp32 model")
    fn = build.runtime.bind(feed)
    fn()
    build.runtime.synchronize()
    if target.device.kind == "cpu":  # nothing to copy to a device, timed by the host clock
        assert build.runtime.bind_host(feed) is None and build.runtime.timing_stream() is None, cls.name
