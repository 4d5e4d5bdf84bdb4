"""Traffic as part of the target, the serving config of a trial, its sampling, metrics, constraints and hand-off."""

from __future__ import annotations

import optuna
import pytest
from support import DATA, run_cli

from planner.config import ServingConfig, TrialConfig
from planner.errors import ConfigError
from planner.space import load_space, rebuild, sample
from planner.target import load_target


def _target_yaml(tmp_path, traffic: str):
    p = tmp_path / "t.yaml"
    p.write_text((DATA / "fast-cpu.yaml").read_text() + traffic)
    return p


def test_traffic_loads_with_defaults(tmp_path):
    t = load_target(_target_yaml(tmp_path, "traffic: {rate: 50}\n"))
    assert t.traffic.arrival == "poisson" and t.traffic.rate == 50 and t.traffic.request_batch == 1
    assert t.traffic.percentile == "p99" and t.traffic.slo_ms is None
    assert load_target(DATA / "fast-cpu.yaml").traffic is None  # without it: today's single-request protocol


@pytest.mark.parametrize("traffic, where, says", [
    ("traffic: {rate: -5}\n", "traffic.rate", "greater than 0"),
    ("traffic: {arrival: bursty, rate: 5}\n", "traffic.arrival", "'poisson' or 'closed'"),
    ("traffic: {arrival: poisson}\n", "traffic", "needs 'rate'"),
    ("traffic: {arrival: closed, rate: 5}\n", "traffic", "needs 'concurrency'"),
    ("traffic: {rate: 5, percentile: p95}\n", "traffic.percentile", "'p50', 'p90' or 'p99'"),
    ("traffic: {rate: 5, request_batch: 32}\n", "<root>", "exceeds max_batch_size"),
    ("traffic: {rate: 5, burst: 2}\n", "traffic.burst", "unknown key; valid keys: arrival, concurrency"),
])
def test_bad_traffic_names_file_field_and_choices(tmp_path, traffic, where, says):
    p = _target_yaml(tmp_path, traffic)
    with pytest.raises(ConfigError) as e:
        load_target(p)
    line = str(e.value)
    assert f"{p}: {where}" in line and says in line, line


def test_bad_traffic_from_the_cli_is_one_line_exit_2_nothing_written(tmp_path):
    p = _target_yaml(tmp_path, "traffic: {arrival: bursty, rate: -1}\n")
    home = tmp_path / "home"
    r = run_cli("optimize", "--model", "tiny-mlp", "--target", p, "--space", DATA / "small-space.yaml",
                "--trials", "1", "--home", home)
    assert r.returncode == 2, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if "traffic" in ln]
    assert errors and all(ln.startswith("error:") or str(p) in ln for ln in errors), r.stderr
    assert any("traffic.arrival" in ln and "'poisson' or 'closed'" in ln for ln in errors), r.stderr
    assert any("traffic.rate" in ln for ln in errors), r.stderr
    assert "Traceback" not in r.stderr
    assert not (home / "optuna.db").exists() and not (home / "studies").exists()


def test_serving_config_round_trips_and_keeps_old_keys():
    plain = TrialConfig(backend="onnxruntime", batch_size=1)
    assert "serving" not in plain.to_dict()  # configs without traffic hash as before
    assert TrialConfig.from_dict(plain.to_dict()) == plain
    served = TrialConfig(backend="onnxruntime", batch_size=1,
                         serving=ServingConfig(instances=2, threads=1, max_batch=4, max_queue_delay_us=500))
    d = served.to_dict()
    assert d["serving"] == {"instances": 2, "threads": 1, "max_batch": 4, "max_queue_delay_us": 500}
    back = TrialConfig.from_dict(d)
    assert back == served and hash(back) == hash(served) and back.key() == served.key() != plain.key()
    assert served.flat()["serving.max_batch"] == 4 and "serve:x2" in served.describe()
    assert ServingConfig(instances=3).threads_per_instance(8) == 2 and ServingConfig(threads=3).threads_per_instance(8) == 3


def _space(tmp_path, text: str):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return load_space(p)


SPACE = """name: s
backends:
  onnxruntime: {}
  torch_compile: {}
  tvm: {}
batch_size: [1, 4, 8]
serving:
  instances: [1, 2, 4]
  max_batch: [1, 4, 32]
  max_queue_delay_us: [100, 900]
"""


def test_serving_is_sampled_only_with_traffic_and_rebuilt_from_params(tmp_path):
    space = _space(tmp_path, SPACE)
    plain = load_target(DATA / "fast-cpu.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        cfg = sample(study.ask(), space, plain, "torch")
        assert cfg.serving is None
    served = load_target(_target_yaml(tmp_path, "traffic: {rate: 50, request_batch: 2}\n")).model_copy(update={"threads": 2})
    seen = set()
    for _ in range(40):
        trial = study.ask()
        cfg = sample(trial, space, served, "torch")
        assert cfg.batch_size == 2  # the request batch: the server forms the batches, not the space's batch_size
        assert "batch_size" not in trial.params
        if cfg.backend == "tvm":  # declares no serving: one instance, no batching
            assert cfg.serving == ServingConfig() and not any(k.startswith("serving.") for k in trial.params)
            continue
        if cfg.backend == "torch_compile":  # instances and threads; no dynamic batching (it would recompile)
            assert cfg.serving.instances in (1, 2) and cfg.serving.max_batch == 1
            assert "serving.instances" in trial.params and "serving.max_batch" not in trial.params
            assert rebuild(trial.params, space, served, "torch") == cfg
            continue
        sv = cfg.serving
        assert sv.instances in (1, 2)  # capped at the target's 2 threads
        assert sv.max_batch in (1, 4)  # 32 requests of 2 samples exceed max_batch_size 16
        assert (sv.max_queue_delay_us in (100, 900)) == (sv.max_batch > 1) and (sv.max_batch > 1 or sv.max_queue_delay_us == 0)
        assert rebuild(trial.params, space, served, "torch") == cfg
        seen.add((sv.instances, sv.max_batch))
    assert seen == {(1, 1), (1, 4), (2, 1), (2, 4)}


def _served_result(p99: float, rate: float = 100.0, achieved: float = 100.0, dropped: int = 0) -> dict:
    at = {"p50_ms": 1.0, "p90_ms": 2.0, "p99_ms": p99, "mean_ms": 1.2, "max_ms": p99 + 1, "rate": rate,
          "achieved_rate": achieved, "dropped": dropped, "late": 0, "requests": 400, "mean_batch": 1.5}
    return {"at_rate": at, "sustained_rate": 200.0,
            "serving": {"instances": 2, "threads_per_instance": 1, "max_batch": 4, "max_queue_delay_us": 500}}


def test_served_latency_is_the_objective_and_the_slo(tmp_path):
    from planner.record.metrics import metrics_of
    from planner.record.objectives import constraints

    target = load_target(_target_yaml(tmp_path, "traffic: {rate: 100, slo_ms: 20}\n"))
    cfg = TrialConfig(backend="onnxruntime", batch_size=1, serving=ServingConfig(instances=2, max_batch=4, max_queue_delay_us=500))
    lat = {"p50_ms": 0.5, "p90_ms": 0.6, "p99_ms": 0.9, "mean_ms": 0.5, "min_ms": 0.4, "cv": 0.1, "n": 100, "windows": 1}
    res = {"latency": lat, "quality": {"quality_loss": 0.0}, "served": _served_result(15.0)}
    m = metrics_of(res, cfg, target)
    assert m["latency_ms"] == m["served_p99_ms"] == 15.0 and m["single_latency_ms"] == 0.5
    assert m["sustained_rate"] == 200.0 and m["serving_instances"] == 2 and m["latency_p50_ms"] == 0.5
    c = constraints(m, target)
    assert c["served_slo"] == pytest.approx(-5.0) and c["served_rate"] == 0.0
    over = metrics_of({**res, "served": _served_result(15.0, achieved=60.0, dropped=3)}, cfg, target)
    assert constraints(over, target)["served_rate"] > 0  # overload: infeasible whatever its p99
    assert constraints(metrics_of({**res, "served": _served_result(25.0)}, cfg, target), target)["served_slo"] > 0
    plain = metrics_of({"latency": lat, "quality": {"quality_loss": 0.0}}, cfg, load_target(DATA / "fast-cpu.yaml"))
    assert plain["latency_ms"] == 0.5 and "served_p99_ms" not in plain


def _manifest(serving: dict | None) -> dict:
    cfg = {"backend": "onnxruntime", "batch_size": 1}
    if serving:
        cfg["serving"] = serving
    return {"trial": {"config": cfg}, "target": {"max_batch_size": 16, "device": {"kind": "cpu"},
                                      "traffic": {"arrival": "poisson", "rate": 80, "request_batch": 2}}}


def test_triton_config_carries_the_measured_serving(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from planner.select.export import triton_config

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), str(path))
    head = 'platform: "onnxruntime_onnx"'
    notes: list[str] = []
    text, io = triton_config("m", head, path, _manifest({"instances": 3, "threads": 0, "max_batch": 4,
                                                         "max_queue_delay_us": 750}), 1, None, notes)
    assert "instance_group [ { count: 3, kind: KIND_CPU } ]" in text
    assert "dynamic_batching {\n  preferred_batch_size: [ 8 ]\n  max_queue_delay_microseconds: 750\n}" in text
    assert io["max_batch_size"] == 8 and "max_batch_size: 8" in text  # 4 requests of 2 samples: what was measured
    assert any("poisson 80" in n for n in notes)
    text, io = triton_config("m", head, path, _manifest({"instances": 2, "threads": 0, "max_batch": 1,
                                                         "max_queue_delay_us": 0}), 1, None, [])
    assert "count: 2," in text and "dynamic_batching" not in text and io["max_batch_size"] == 16
    text, _ = triton_config("m", head, path, _manifest(None), 1, None, [])
    assert "count: 1," in text and "dynamic_batching" not in text


def test_bad_serving_space_is_reported(tmp_path):
    with pytest.raises(ConfigError) as e:
        _space(tmp_path, "name: s\nbackends: {onnxruntime: {}}\nserving: {instances: [0, 2], max_batch: [1.5]}\n")
    text = str(e.value)
    assert "serving.instances: must be whole numbers ≥ 1" in text and "serving.max_batch: must be whole numbers ≥ 1" in text


def test_a_study_does_not_mix_served_and_single_request_latency(tmp_path):
    """Resuming a study with the same target name but traffic added would put served p99s beside single-request
    p50s in one front: refused, exit 2."""
    home = tmp_path / "home"
    common = ("--model", "tiny-mlp", "--space", DATA / "small-space.yaml", "--trials", "1", "--eval-samples", "8",
              "--study", "s", "--home", home)
    r = run_cli("optimize", "--target", DATA / "fast-cpu.yaml", *common)
    assert r.returncode == 0, r.stderr
    served = _target_yaml(tmp_path, "traffic: {rate: 50, duration_s: 0.5, warmup_s: 0.1}\n")
    r = run_cli("optimize", "--target", served, *common)
    assert r.returncode == 2 and "traffic" in r.stderr and "choose another --study name" in r.stderr, r.stderr


def test_a_seed_fixes_how_it_is_served_under_traffic_only(tmp_path):
    """A seed's ``serving`` (e.g. OpenVINO's THROUGHPUT default: a stream per core) becomes the trial's serving
    config under traffic, is ignored without traffic, and a value the space does not offer skips the seed."""
    from planner.space import seed_params

    space = tmp_path / "s.yaml"
    space.write_text("name: s\nbackends: {torch: {}}\nserving: {instances: [1, 2], max_batch: [1, 4]}\n"
                     "seeds:\n  - {backend: torch, serving: {instances: 2, max_batch: 1}}\n"
                     "  - {backend: torch, serving: {instances: 3}}\n")
    spc = load_space(space)
    served = load_target(_target_yaml(tmp_path, "traffic: {rate: 50}\n")).model_copy(update={"threads": 2})
    plain = load_target(DATA / "fast-cpu.yaml")
    params, _ = seed_params(spc.seeds[0], spc, served, "torch", ["torch"])
    assert params["serving.instances"] == 2 and params["serving.max_batch"] == 1
    cfg = rebuild(params, spc, served, "torch")
    assert cfg.serving == ServingConfig(instances=2, threads=0, max_batch=1, max_queue_delay_us=0)
    params, _ = seed_params(spc.seeds[0], spc, plain, "torch", ["torch"])
    assert not any(k.startswith("serving.") for k in params) and rebuild(params, spc, plain, "torch").serving is None
    params, why = seed_params(spc.seeds[1], spc, served, "torch", ["torch"])
    assert params is None and "serving.instances=3" in why
