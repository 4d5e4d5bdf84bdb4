"""A transformers model as users bring it (keyword inputs, a ModelOutput with nested hidden states) through every
usable non-decoder backend: the flattened outputs of each engine match the eager module's, in the same order."""

import numpy as np
import pytest

from planner.backends import registry
from planner.config import QuantConfig, TrialConfig
from planner.model import parse_model
from planner.source import ModelSource

NAMES = [n for n in registry.REGISTRY]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    pytest.importorskip("transformers")
    import sys

    from support import DATA

    sys.path.insert(0, str(DATA.parent))
    from hf_tiny import vit_classifier

    d = vit_classifier(tmp_path_factory.mktemp("vit"))
    import json

    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "output_hidden_states": True}))
    src = ModelSource(parse_model(f"hf:{d}"), tmp_path_factory.mktemp("cache"))
    assert src.output_names == ["logits", "hidden_states.0", "hidden_states.1", "hidden_states.2"]
    return src


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    from support import DATA

    from planner.target import load_target

    t = tmp_path_factory.mktemp("t") / "t.yaml"
    t.write_text((DATA / "fast-cpu.yaml").read_text().replace("backends: [", "backends: [openvino, "))
    return load_target(t)


@pytest.mark.parametrize("name,scheme", [(n, None) for n in NAMES] + [("onnxruntime", "int8_dynamic")])
def test_engines_return_the_flattened_outputs(name, scheme, source, target, tmp_path):
    fast_target = target
    cls = registry.get(name)
    if not cls.availability().usable or cls.decoder_only or fast_target.device.kind not in cls.devices:
        pytest.skip(f"{name} does not run here")
    cfg = TrialConfig(name, 2, quant=QuantConfig(scheme) if scheme else QuantConfig())
    why = cls.check(cfg, fast_target, source.format)
    if why:
        pytest.skip(why)
    build = cls().compile(source, cfg, fast_target, tmp_path)
    assert build.ok, build.error
    import torch

    feed = source.example_inputs(2, seed=9)
    with torch.inference_mode():
        want = [o.numpy() for o in source.base_module()(*[torch.from_numpy(v) for v in feed.values()])]
    got = build.runtime.infer(feed)
    assert [np.shape(o) for o in got] == [o.shape for o in want]
    tol = 0.05 if scheme else 1e-3
    for g, w in zip(got, want):
        assert np.abs(np.asarray(g) - w).max() <= tol * max(1.0, np.abs(w).max())
