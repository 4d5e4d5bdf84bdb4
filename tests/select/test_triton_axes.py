"""Triton configs of models whose tensors do not all batch on their first dim (issue 29): Triton's batching takes
the batch as the first dim of every input and output, so such a model gets max_batch_size 0, full dims with -1 at
each batch axis (as the manifest's ``batch_axis`` and the reference's ``out_axes`` say) and no dynamic_batching;
a scalar is Triton's ``dims: [ 1 ]`` + ``reshape: { shape: [ ] }``."""

import re
import sys

from support import DATA

from planner.select.export import python_backend_model, triton_config

HEAD = 'platform: "onnxruntime_onnx"'
INPUTS = [{"name": "x", "shape": [16], "dtype": "float32", "batch_axis": 0},
          {"name": "state", "shape": [2, 8], "dtype": "float32", "batch_axis": 1},
          {"name": "sr", "shape": [], "dtype": "int64", "batch_axis": None}]


def manifest(inputs, serving=None):
    cfg = {"backend": "onnxruntime", "batch_size": 2, **({"serving": serving} if serving else {})}
    return {"model": {"inputs": inputs}, "trial": {"config": cfg},
            "target": {"max_batch_size": 16, "device": {"kind": "cpu"},
                       "traffic": {"arrival": "poisson", "rate": 80, "request_batch": 1}}}


def tensor(text, name):
    m = re.search(r'\{\s*name: "' + name + r'"\s*data_type: (\w+)\s*dims: \[ ([\d, -]*) \]\s*(reshape: \{ shape: \[ \] \})?\s*\}', text)
    assert m, f"{name} not in\n{text}"
    return m.group(1), [int(d) for d in m.group(2).split(",")], bool(m.group(3))


def test_state_on_axis_1_and_a_scalar_input_get_explicit_dims(tmp_path):
    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    path = build(tmp_path / "model.onnx", seq=16)
    notes: list[str] = []
    served = {"instances": 2, "threads": 0, "max_batch": 4, "max_queue_delay_us": 500}  # measured with batching
    text, io = triton_config("st", HEAD, path, manifest(INPUTS, served), 2, None, notes, out_axes=[0, 1])
    assert "max_batch_size: 0" in text and io["max_batch_size"] == 0 and io["explicit_batch"]
    assert "dynamic_batching" not in text  # Triton refuses it with max_batch_size 0
    assert tensor(text, "x") == ("TYPE_FP32", [-1, 16], False)
    assert tensor(text, "state") == ("TYPE_FP32", [2, -1, 8], False)
    assert tensor(text, "sr") == ("TYPE_INT64", [1], True)  # a scalar: dims [1], reshaped to []
    assert tensor(text, "out") == ("TYPE_FP32", [-1, 8], False)
    assert tensor(text, "new_state") == ("TYPE_FP32", [2, -1, 8], False)
    assert "count: 2," in text and text.count("{") == text.count("}") and text.count("[") == text.count("]")
    why = next(n for n in notes if n.startswith("max_batch_size 0"))
    assert "state (batch axis 1), sr (no batch axis), new_state (batch axis 1)" in why, why
    assert any("dynamic_batching only with max_batch_size > 0" in n for n in notes), notes
    assert any(n.startswith("sr: no dims of its own") and "shape [1]" in n for n in notes), notes


def test_an_output_alone_on_another_axis_is_enough(tmp_path):
    sys.path.insert(0, str(DATA))
    from stateful_onnx import build

    path = build(tmp_path / "model.onnx", seq=16)
    text, io = triton_config("st", HEAD, path, manifest([{**i, "batch_axis": 0} for i in INPUTS]), 2, None, [],
                             out_axes=[0, 1])
    assert io["max_batch_size"] == 0 and tensor(text, "new_state")[1] == [2, -1, 8]


def test_axis_0_models_keep_triton_batching(tmp_path):
    """Every tensor batched first: max_batch_size from the target, dims without the batch dim; a batch-only
    tensor (``y[batch]``) is ``dims: [ 1 ]`` reshaped to [], not empty dims Triton rejects."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b"])
    axes = onnx.numpy_helper.from_array(__import__("numpy").array([1], dtype="int64"), "axes")
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=0)], "g", [x], [y],
                              initializer=[axes])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    notes: list[str] = []
    text, io = triton_config("m", HEAD, path, manifest([{"name": "x", "shape": [4], "dtype": "float32"}]), 2, None,
                             notes, out_axes=[0])
    assert "max_batch_size: 16" in text and not io["explicit_batch"] and [n[:22] for n in notes] == ["y: no dims of its own,"]
    assert tensor(text, "x") == ("TYPE_FP32", [4], False)
    assert tensor(text, "y") == ("TYPE_FP32", [1], True)


def test_python_backend_explicit_dims_and_output_axes(tmp_path):
    notes: list[str] = []
    text, io = triton_config("pt", None, tmp_path / "model.pt2", manifest(INPUTS), 2,
                             {"dynamic_batch": True, "flat_output_width": 24}, notes)
    assert io["max_batch_size"] == 0 and 'backend: "python"' in text
    assert tensor(text, "state") == ("TYPE_FP32", [2, -1, 8], False) and tensor(text, "sr")[2]
    assert tensor(text, "output0") == ("TYPE_FP32", [-1, 24], False)  # flat, one row per sample
    src = python_backend_model("model.so", [0, 1])
    assert "OUT_AXES = [0, 1]" in src and "OUT_AXES = None" in python_backend_model("model.pt2")
    compile(src, "model.py", "exec")
