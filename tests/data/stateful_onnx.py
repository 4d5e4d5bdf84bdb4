"""A small stateful ONNX model, as streaming models (voice activity, speech) are shipped: ``x[batch, seq]``,
``state[2, batch, 8]`` (batched on axis 1), ``sr[]`` (an int64 scalar, no batch axis); outputs ``out[batch, 8]``
and ``new_state[2, batch, 8]``.  The size of ``seq`` is not in the file (it must be 16): it has to be declared."""

from pathlib import Path


def build(path: Path, seq: str | int = "seq") -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((16, 8)).astype(np.float32), "w")
    axes0 = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes0")
    one = numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["y"]),
        helper.make_node("ReduceSum", ["state", "axes0"], ["s"], keepdims=0),
        helper.make_node("Cast", ["sr"], ["srf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["srf", "one"], ["scale"]),
        helper.make_node("Add", ["y", "s"], ["ys"]),
        helper.make_node("Mul", ["ys", "scale"], ["out"]),
        helper.make_node("Unsqueeze", ["out", "axes0"], ["out0"]),
        helper.make_node("Add", ["state", "out0"], ["new_state"]),
    ]
    graph = helper.make_graph(
        nodes, "stateful",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", seq]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 8]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("new_state", TensorProto.FLOAT, [2, "batch", 8])],
        initializer=[w, axes0, one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
