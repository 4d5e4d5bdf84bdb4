"""ModelSource: inputs, data, transforms and the cached ONNX export (real torch/ONNX Runtime)."""

import numpy as np
import pytest
from support import DATA

from planner.config import PruneConfig, TrialConfig
from planner.errors import ConfigError
from planner.model import parse_model
from planner.source import ModelSource


def test_inputs_from_example_inputs_function(tmp_path):
    src = ModelSource(parse_model(f"{DATA / 'models.py'}:tiny"), tmp_path)
    assert [(i.name, i.shape, i.dtype) for i in src.inputs] == [("x", (16,), "float32")]
    a, b = src.sample_inputs(4, seed=1), src.sample_inputs(4, seed=1)
    assert np.array_equal(a["x"], b["x"]) and a["x"].shape == (4, 16)
    assert src.synthetic


def test_pruning_shrinks_params_and_flops_and_export_is_cached(tmp_path):
    src = ModelSource(parse_model("tiny-mlp"), tmp_path)
    cfg = TrialConfig("onnxruntime", 1, prune=PruneConfig("l1", 0.5, 8))
    m = src.torch_module(cfg)
    info = src.transform_info
    assert info["prune_params_after"] < 0.6 * info["prune_params_before"]
    assert info["flops_after"] < 0.6 * info["flops_before"]
    assert src.torch_module(cfg) is m  # transformed once per config
    p1 = src.onnx_path(cfg)
    assert src.transform_info["onnx_export_cached"] == 0
    again = ModelSource(parse_model("tiny-mlp"), tmp_path)
    assert again.onnx_path(cfg) == p1 and again.transform_info["onnx_export_cached"] == 1
    assert again.onnx_path(TrialConfig("onnxruntime", 1)) != p1


def test_data_from_npz_and_function(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 16)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, labels=np.arange(10) % 4)
    src = ModelSource(parse_model(f"{DATA / 'models.py'}:tiny", data=str(tmp_path / "d.npz")), tmp_path)
    got = src.sample_inputs(12)
    assert np.array_equal(got["x"][:10], x) and np.array_equal(got["x"][10:], x[:2]) and not src.synthetic
    fn = tmp_path / "data.py"
    fn.write_text("import numpy as np\ndef make():\n    return {'y': np.zeros((3, 16), np.float32)}\n")
    bad = ModelSource(parse_model(f"{DATA / 'models.py'}:tiny", data=f"{fn}:make"), tmp_path)
    with pytest.raises(ConfigError, match=r"missing arrays \['x'\]"):
        bad.data()


CALIB_MODEL = """
import numpy as np
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x)

def net():
    return Net()

def example_inputs(batch_size):
    return (torch.zeros(batch_size, 4),)

def dataset():
    return {"x": np.zeros((6, 4), np.float32)}

def calibration_dataset():
    return {"x": np.ones((3, 4), np.float32)}
"""


def test_calibration_inputs_come_from_the_held_out_set(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL)
    src = ModelSource(parse_model(f"{f}:net"), tmp_path)
    assert src.calibration_source == "held-out"
    got = src.calibration_inputs(5)["x"]
    assert got.shape == (5, 4) and np.all(got == 1)  # cycles over the 3 held-out rows, never the evaluation zeros
    assert np.all(src.sample_inputs(5)["x"] == 0)


def test_without_a_calibration_set_the_shared_source_is_named(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL.replace("def calibration_dataset", "def _unused"))
    src = ModelSource(parse_model(f"{f}:net"), tmp_path)
    assert src.calibration_source == "evaluation"
    assert np.all(src.calibration_inputs(2)["x"] == 0)
    assert ModelSource(parse_model(f"{DATA / 'models.py'}:tiny"), tmp_path).calibration_source == "synthetic"


def test_calibration_set_missing_an_input_is_a_config_error(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL.replace('return {"x": np.ones((3, 4), np.float32)}', 'return {"y": np.ones((3, 4))}'))
    with pytest.raises(ConfigError, match=r"calibration_dataset\(\) lacks arrays \['x'\]"):
        ModelSource(parse_model(f"{f}:net"), tmp_path).calibration_inputs(2)


def test_int8_static_records_its_calibration_source(tmp_path):
    from planner.backends.onnxruntime import quantized_onnx
    from planner.config import QuantConfig
    from planner.config import freeze_options

    f = tmp_path / "m.py"
    f.write_text(CALIB_MODEL)
    src = ModelSource(parse_model(f"{f}:net"), tmp_path / "cache")
    cfg = TrialConfig("onnxruntime", 1, quant=QuantConfig("int8_static", freeze_options({"calibrate_method": "minmax"})))
    info = quantized_onnx(src, cfg, src.onnx_path(), tmp_path / "q.onnx")
    assert info["calibration_data"] == "held-out" and info["calibration_held_out"] == 1.0


def test_outputs_of_any_structure_are_flattened_to_names():
    import torch

    pytest.importorskip("transformers")
    from transformers.modeling_outputs import SequenceClassifierOutput

    from planner.outputs import default_outputs, flatten_outputs, select_outputs

    t = torch.zeros(2, 3)
    out = SequenceClassifierOutput(logits=t, hidden_states=(t, t))  # loss and attentions unset: absent
    assert [n for n, _ in flatten_outputs(out)] == ["logits", "hidden_states.0", "hidden_states.1"]
    assert [n for n, _ in flatten_outputs({"a": t, "b": {"c": [t, None]}})] == ["a", "b.c.0"]
    assert [n for n, _ in flatten_outputs((t, t))] == ["output0", "output1"]
    assert [n for n, _ in flatten_outputs(t)] == ["output"]
    assert default_outputs(["hidden_states.0", "logits"]) == ["logits"]
    assert default_outputs(["pooler_output", "last_hidden_state"]) == ["last_hidden_state"]
    assert default_outputs(["a", "b"]) == ["a"] and default_outputs(["output0", "output1"]) == ["output0", "output1"]
    assert select_outputs(["a", "b"], ("b",), "m") == [1]
    with pytest.raises(ConfigError, match="--output c: no such output; the model's outputs are a, b"):
        select_outputs(["a", "b"], ("c",), "m")


KW_MODEL = """
import torch
from transformers.modeling_outputs import BaseModelOutput

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 4)

    def forward(self, input_ids=None, pixel_values=None, state=None, sr=None):
        h = self.fc(pixel_values) + state.sum(0) * sr
        return BaseModelOutput(last_hidden_state=h, hidden_states=(h, 2 * h))

def net():
    return Net()

def example_inputs(batch_size):
    return {"pixel_values": torch.randn(batch_size, 4), "state": torch.randn(2, batch_size, 4), "sr": torch.tensor(2.0)}
"""


def test_keyword_inputs_and_batch_axes_from_example_inputs(tmp_path):
    import torch

    pytest.importorskip("transformers")

    f = tmp_path / "m.py"
    f.write_text(KW_MODEL)
    src = ModelSource(parse_model(f"{f}:net"), tmp_path)
    assert [(i.name, i.shape, i.batch_axis) for i in src.inputs] == [("pixel_values", (4,), 0), ("state", (2, 4), 1),
                                                                     ("sr", (), None)]
    ex = src.example_inputs(3)
    assert ex["state"].shape == (2, 3, 4) and ex["sr"].shape == () and src.sample_inputs(3)["state"].shape == (3, 2, 4)
    m = src.base_module()  # called by keyword (pixel_values is not forward's first parameter), outputs flattened
    assert type(m).__name__ == "FlatOutputs" and src.output_names == ["last_hidden_state", "hidden_states.0", "hidden_states.1"]
    out = m(*[torch.from_numpy(v) for v in ex.values()])
    assert isinstance(out, tuple) and len(out) == 3 and out[0].shape == (3, 4)
    import onnx

    g = onnx.load(str(src.onnx_path())).graph  # exported with each input's own batch axis, outputs by name
    assert [o.name for o in g.output] == src.output_names
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in g.input}
    assert dims["state"][0] == 2 and isinstance(dims["state"][1], str) and dims["sr"] == []


def test_inputs_syntax_for_batch_axes_and_its_errors():
    from planner.model import parse_input_shapes

    got = parse_input_shapes("x:16,state:2x8:float32:batch=1,sr::int64:batch=none")
    assert [(i.name, i.shape, i.dtype, i.batch_axis) for i in got] == [
        ("x", (16,), "float32", 0), ("state", (2, 8), "float32", 1), ("sr", (), "int64", None)]
    assert got[1].full_shape(5) == (2, 5, 8) and got[2].full_shape(5) == ()
    for bad, msg in [("s:2x8:float32:axis=1", "expected batch=AXIS or batch=none"), ("s:2:float32:batch=3", "past the 2 axes")]:
        with pytest.raises(ConfigError, match=msg):
            parse_input_shapes(bad)


def test_model_yaml_declares_batch_axes_outputs_and_task(tmp_path):
    import sys

    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    build(tmp_path / "s.onnx")
    y = tmp_path / "m.yaml"
    y.write_text("source: s.onnx\noutputs: [new_state]\ninputs:\n  - {name: x, shape: [16]}\n"
                 "  - {name: sr, shape: [], dtype: int64, batch_axis: null}\n")
    spec = parse_model(str(y))
    assert spec.outputs == ("new_state",) and spec.inputs[1].batch_axis is None
    src = ModelSource(spec, tmp_path)
    assert [(i.name, i.batch_axis) for i in src.inputs] == [("x", 0), ("state", 1), ("sr", None)]  # state from the file
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "config.json").write_text("{}")
    y.write_text("source: hf:dir\ntask: fill-mask\noutputs: [logits]\n")
    hf = parse_model(str(y))
    assert (hf.kind, hf.ref, hf.task, hf.outputs) == ("hf", f"hf:{tmp_path / 'dir'}", "fill-mask", ("logits",))
    y.write_text("source: hf:dir\ntask: fill-masks\n")
    with pytest.raises(ConfigError, match="did you mean 'fill-mask'"):
        parse_model(str(y))
    y.write_text("source: s.onnx\ntask: text-classification\n")
    with pytest.raises(ConfigError, match="only for hf:DIR models"):
        parse_model(str(y))
    y.write_text("source: s.onnx\ninputs:\n  - {name: x, shape: [16], batch_axis: 2}\n")
    with pytest.raises(ConfigError, match="batch_axis 2 is past the 2 axes"):
        parse_model(str(y))


def test_hf_directory_inputs_class_and_weights(tmp_path):
    """hf:DIR: inputs from the config's image_size without a processor; --task picks the Auto class; pickled
    weights load (weights_only); an architecture transformers lacks is one line, no code from the directory run."""
    import json
    import sys

    pytest.importorskip("transformers")
    sys.path.insert(0, str(DATA.parent))
    from hf_tiny import bert_classifier, vit_classifier

    d = vit_classifier(tmp_path / "vit", processor=False)
    src = ModelSource(parse_model(f"hf:{d}"), tmp_path / "c")
    assert [(i.name, i.shape) for i in src.inputs] == [("pixel_values", (3, 16, 16))]
    assert type(src.base_module().model).__name__ == "ViTForImageClassification" and src.output_names == ["logits"]
    import torch

    from planner.backends._torch_runtime import save_exported_program

    assert save_exported_program(src.base_module(), src.example_inputs(2), tmp_path / "m.pt2", None, False) is None
    assert torch.export.load(str(tmp_path / "m.pt2")).module()(torch.randn(5, 3, 16, 16))[0].shape == (5, 5)  # dynamic batch
    feat = ModelSource(parse_model(f"hf:{d}", task="feature-extraction"), tmp_path / "c")
    assert type(feat.base_module().model).__name__ == "ViTModel"
    assert feat.output_names == ["last_hidden_state", "pooler_output"]
    assert feat.quality_outputs == [0] and feat.output_kind == "embedding" and src.output_kind == "logits"

    b = bert_classifier(tmp_path / "bert")
    from transformers import BertForSequenceClassification

    (tmp_path / "pickled").mkdir()
    torch.save(BertForSequenceClassification.from_pretrained(b).state_dict(), tmp_path / "pickled" / "pytorch_model.bin")
    for f in [*b.glob("tokenizer*"), b / "config.json"]:
        (tmp_path / "pickled" / f.name).write_bytes(f.read_bytes())
    assert (tmp_path / "pickled" / "pytorch_model.bin").is_file() and not list((tmp_path / "pickled").glob("*.safetensors"))
    got = ModelSource(parse_model(f"hf:{tmp_path / 'pickled'}"), tmp_path / "c")
    assert [i.name for i in got.inputs] == ["input_ids", "token_type_ids", "attention_mask"]
    assert got.inputs[0].high == 21 and got.inputs[0].shape == (16,)

    cfg = json.loads((d / "config.json").read_text())
    cfg.update(architectures=["MyOwnViT"], auto_map={"AutoModel": "modeling_mine.MyOwnViT"})
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_mine.py").write_text("raise SystemExit('directory code ran')\n")
    with pytest.raises(ConfigError, match="architecture MyOwnViT is not in transformers .* pass --task"):
        ModelSource(parse_model(f"hf:{d}"), tmp_path / "c").base_module()
    fixed = ModelSource(parse_model(f"hf:{d}", task="image-classification"), tmp_path / "c").base_module()
    assert type(fixed.model).__name__ == "ViTForImageClassification"


def test_length_axes_from_a_yaml_and_a_tokenizer_and_a_dynamic_length_export(tmp_path):
    """An input's `length_axis`: from a model YAML (past the shape: one line) and from a right-padding tokenizer;
    with `variable_length` the ONNX export keeps it dynamic (its own cache entry) and runs a shorter request."""
    import sys

    import numpy as np

    y = tmp_path / "m.yaml"
    y.write_text("source: tiny-mlp\ninputs:\n  - {name: x, shape: [64], length_axis: 1}\n")
    with pytest.raises(ConfigError, match="length_axis 1 is past the 1 axes of its shape"):
        parse_model(str(y))
    y.write_text("source: tiny-mlp\ninputs:\n  - {name: x, shape: [64], length_axis: 0}\n")
    spec = parse_model(str(y))
    assert spec.inputs[0].length_axis == 0 and spec.inputs[0].full_length_axis() == 1
    assert type(spec).from_dict(spec.to_dict()) == spec
    pytest.importorskip("transformers")
    import onnxruntime as ort

    sys.path.insert(0, str(DATA.parent))
    from hf_tiny import bert_classifier

    src = ModelSource(parse_model(f"hf:{bert_classifier(tmp_path / 'bert')}"), tmp_path / "c")
    assert {i.name: i.length_axis for i in src.inputs} == {"input_ids": 0, "token_type_ids": 0, "attention_mask": 0}
    from planner.model import length_axes

    assert length_axes(src.inputs) == {"input_ids": 1, "token_type_ids": 1, "attention_mask": 1}
    fixed = src.onnx_path(None)
    src.variable_length = True
    dynamic = src.onnx_path(None)
    assert dynamic != fixed
    feed = {k: np.ascontiguousarray(v[:, :5]) for k, v in src.example_inputs(1).items()}
    assert ort.InferenceSession(str(dynamic)).run(None, feed)[0].shape[0] == 1
    with pytest.raises(Exception):  # the fixed-length export takes its full length only
        ort.InferenceSession(str(fixed)).run(None, feed)


def test_calibration_of_inputs_not_batched_on_axis_0_is_an_unsupported_candidate(tmp_path):
    import sys

    from planner.errors import CandidateFailed, FailReason

    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    src = ModelSource(parse_model(str(build(tmp_path / "s.onnx", seq=16))), tmp_path)
    with pytest.raises(CandidateFailed, match=r"inputs batched otherwise: state \(axis 1\), sr \(none\)") as e:
        src.calibration_inputs(4)
    assert e.value.reason == FailReason.UNSUPPORTED


def test_declared_onnx_inputs_that_contradict_the_file_are_one_line_errors(tmp_path):
    import sys

    from planner.model import parse_input_shapes

    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    f = build(tmp_path / "s.onnx")
    for decl, msg in [  # silero-vad's case: the state declared as if it batched on axis 0, the scalar as batched
        ("x:16,state:2x8:float32", r"--inputs state: declared as \[B, 2, 8\] .* gives it dims \[2, batch, 8\]; "
                                   r"e.g. --inputs state:2x8:float32:batch=1"),
        ("x:16,sr::int64", r"--inputs sr: declared as \[B\] .* gives it dims \[\]; e.g. --inputs sr::int64:batch=none"),
        ("x:16x2", r"--inputs x: declared as \[B, 16, 2\] .* gives it dims \[batch, seq\]")]:
        with pytest.raises(ConfigError, match=msg):
            ModelSource(parse_model(str(f), parse_input_shapes(decl)), tmp_path).inputs
