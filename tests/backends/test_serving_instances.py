"""Backends that declare `serving`: the engine is built with the serving config (threads per instance, streams, a
dynamic batch axis for the batches a server forms) and `Runtime.serving_instances` gives one engine instance per
server thread, each computing what `infer` computes.  Real ONNX Runtime and OpenVINO on a tiny model."""

import json
import threading

import numpy as np
import pytest
from support import DATA

from planner.backends import registry
from planner.config import ServingConfig, TrialConfig
from planner.model import parse_model
from planner.source import ModelSource


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return ModelSource(parse_model("tiny-mlp"), tmp_path_factory.mktemp("serving-cache"))


@pytest.fixture
def target(fast_target):
    return fast_target.model_copy(update={"threads": 2})


def _concurrently(calls, feed):
    out = [None] * len(calls)

    def run(i):
        out[i] = calls[i](feed)[0]

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def test_declarations_where_the_engine_has_them():
    assert registry.get("openvino").serving is not None and registry.get("onnxruntime").serving is not None
    # torch.compile: instances and threads, no dynamic batching (each batch size would recompile while served)
    assert registry.get("torch_compile").serving is not None and not registry.get("torch_compile").serving.dynamic_batch
    assert registry.get("tvm").serving is None  # one instance: TVM's thread pool is per process


def test_onnxruntime_sessions_per_instance_with_their_threads(source, target, tmp_path):
    cfg = TrialConfig("onnxruntime", 1, serving=ServingConfig(instances=2, max_batch=4, max_queue_delay_us=100))
    build = registry.get("onnxruntime")().compile(source, cfg, target, tmp_path)
    assert build.ok, build.error
    assert json.loads((tmp_path / "session.json").read_text())["intra_op_threads"] == 1  # 2 threads / 2 instances
    calls = build.runtime.serving_instances(2)
    assert len(calls) == 2
    feed = source.example_inputs(3, seed=1)  # a batch of 3 requests: the ONNX batch axis is dynamic
    want = build.runtime.infer(feed)[0]
    for got in _concurrently(calls, feed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_openvino_streams_per_instance_and_a_dynamic_batch_when_batching(source, target, tmp_path):
    pytest.importorskip("openvino")
    OV = registry.get("openvino")
    cfg = TrialConfig("openvino", 1, serving=ServingConfig(instances=2, max_batch=4, max_queue_delay_us=100))
    build = OV().compile(source, cfg, target, tmp_path)
    assert build.ok, build.error
    assert build.info["compiled_num_streams"] == "2" and build.info["compiled_inference_num_threads"] == "2"
    meta = json.loads((tmp_path / "openvino.json").read_text())
    assert meta["dynamic_batch"] is True and meta["per_instance"] == {"NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": "1"}
    feed = source.example_inputs(3, seed=2)
    want = build.runtime.infer(feed)[0]
    calls = build.runtime.serving_instances(2)
    build.runtime.bind(source.example_inputs(1, seed=0))  # bound tensors of batch 1 do not constrain the instances
    for got in _concurrently(calls, feed):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    plain = OV().compile(source, TrialConfig("openvino", 1, serving=ServingConfig()), target, tmp_path / "plain")
    assert json.loads((tmp_path / "plain" / "openvino.json").read_text())["dynamic_batch"] is False  # no batching: static


@pytest.mark.parametrize("backend", ["torch", "torch_compile"])
def test_torch_threads_per_instance(source, target, tmp_path, backend):
    import torch

    batch = 3 if backend == "torch" else 1  # torch.compile: the compiled batch (it serves without batching)
    cfg = TrialConfig(backend, 1, serving=ServingConfig(instances=2, max_batch=4 if backend == "torch" else 1,
                                                        max_queue_delay_us=100 if backend == "torch" else 0))
    build = registry.get(backend)().compile(source, cfg, target, tmp_path)
    assert build.ok, build.error
    calls = build.runtime.serving_instances(2)
    feed = source.example_inputs(batch, seed=3)
    want = build.runtime.infer(feed)[0]
    seen = []

    def run(call):
        got = call(feed)[0]
        seen.append(torch.get_num_threads())  # the instance set its thread's team: 2 threads / 2 instances
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)

    ts = [threading.Thread(target=run, args=(c,)) for c in calls]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert seen == [1, 1]
