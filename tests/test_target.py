import pytest

from planner.errors import ConfigError
from planner.target import Target, builtin_targets, check_host, load_target, probe_host


@pytest.mark.parametrize("name", sorted(builtin_targets()))
def test_shipped_targets_validate(name):
    t = load_target(name)
    assert t.name == name
    assert "fp32" in t.precisions


def test_required_targets_exist():
    assert {"cpu", "a100", "h100", "l4"} <= set(builtin_targets())


def test_unknown_key_is_named_with_valid_keys(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\ndevice: {kind: cpu}\nthreds: 2\n")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    msg = str(e.value)
    assert "threds" in msg and "unknown key" in msg and "threads" in msg and str(p) in msg


def test_every_error_reported_at_once(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\ndevice: {kind: tpu}\nprecisions: [fp32, fp7]\nconstraints: {latency_slo_ms: -1}\n")
    with pytest.raises(ConfigError) as e:
        load_target(p)
    assert len(e.value.errors) == 3
    assert any("fp7" in x and "fp16" in x for x in e.value.errors)
    assert any("latency_slo_ms" in x for x in e.value.errors)


def test_malformed_yaml_names_line(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\ndevice: [kind: cpu\n")
    with pytest.raises(ConfigError, match=r"t.yaml \(line \d+, column \d+\): malformed YAML"):
        load_target(p)


def test_unknown_builtin_suggests():
    with pytest.raises(ConfigError, match="did you mean 'a100'"):
        load_target("a10")


def test_cuda_needs_gpu_section():
    with pytest.raises(ConfigError):
        from planner.yamlio import validate

        validate(Target, {"name": "g", "device": {"kind": "cuda"}}, "g.yaml")


def test_probe_is_a_valid_target():
    t = probe_host()
    again = Target.model_validate(t.model_dump())
    assert again == t
    assert t.thread_count() >= 1
    if t.device.kind == "cpu":  # int4 weight-only (torch's CPU int4 kernel) is offered on AVX2 and ARM hosts
        assert ("int4" in t.precisions) == ("avx2" in t.device.cpu_isa or __import__("platform").machine() in ("aarch64", "arm64"))


def test_gpu_target_on_cpu_host_fails_fast():
    from planner.target import probe_gpus

    if probe_gpus():
        pytest.skip("this host has a GPU")
    with pytest.raises(ConfigError, match="needs an NVIDIA GPU"):
        check_host(load_target("a100"))


def test_gpu_environment_rows_are_parsed_with_numbers_and_gaps():
    from planner.target import GPU_ENV_FIELDS, parse_gpu_environment

    text = ("NVIDIA H100 80GB HBM3, 550.54.15, P0, 1980, 1980, 2619, 2619, 700.00, 34\n"
            "NVIDIA L4, 535.104.05, P8, 210, 2040, 405, 6251, [N/A], 41\n"
            "garbled line\n")
    rows = parse_gpu_environment(text)
    assert len(rows) == 2 and set(rows[0]) == set(GPU_ENV_FIELDS)
    assert rows[0]["driver_version"] == "550.54.15" and rows[0]["clocks.sm"] == 1980.0 and rows[0]["pstate"] == "P0"
    assert rows[1]["power.limit"] is None and rows[1]["clocks.max.sm"] == 2040.0


AMX_CPUINFO = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
               "flags\t\t: fpu sse4_2 avx avx2 fma avx_vnni avx512f avx512_vnni avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8\n")
AVX512_VNNI_CPUINFO = "flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni\n"
AVX2_CPUINFO = "flags\t\t: fpu sse4_2 avx avx2 fma\n"


def test_cpu_isa_records_amx_and_vnni():
    from planner.target import cpu_isa

    isa = cpu_isa(AMX_CPUINFO)
    assert {"avx_vnni", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16"} <= set(isa)
    assert cpu_isa(AVX2_CPUINFO) == ["sse4_2", "avx", "avx2", "fma"]
    assert cpu_isa("no flags here") == []


def test_bf16_only_with_avx512_bf16_or_amx_and_int8_always():
    from planner.target import cpu_isa, cpu_precisions

    assert cpu_precisions(cpu_isa(AMX_CPUINFO), "x86_64") == ["fp32", "int8", "bf16", "int4"]
    assert cpu_precisions(["avx2", "amx_bf16"], "x86_64") == ["fp32", "int8", "bf16", "int4"]
    assert cpu_precisions(cpu_isa(AVX512_VNNI_CPUINFO), "x86_64") == ["fp32", "int8", "int4"]  # VNNI: faster int8, no bf16
    assert cpu_precisions(cpu_isa(AVX2_CPUINFO), "x86_64") == ["fp32", "int8", "int4"]
    assert cpu_precisions([], "x86_64") == ["fp32", "int8"]


def test_probe_follows_this_cpu_and_offers_openvino():
    t = probe_host()
    if t.device.kind != "cpu":
        pytest.skip("this host has a GPU: the probe describes it")
    isa = t.device.cpu_isa
    assert ("bf16" in t.precisions) == ("avx512_bf16" in isa or "amx_bf16" in isa)
    assert "int8" in t.precisions and "openvino" in t.backends


def test_generic_cpu_target_stays_avx2_without_bf16():
    t = load_target("cpu")
    assert "bf16" not in t.precisions and t.device.cpu_isa == ["avx", "avx2", "fma"]
    assert "openvino" in t.backends


def test_a_registered_backend_this_install_lacks_may_be_named_a_typo_may_not(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text("name: x\ndevice: {kind: cpu}\nbackends: [torch, tensorrt]\n")  # tensorrt: registered, not installed
    assert load_target(p).backends == ["torch", "tensorrt"]
    p.write_text("name: x\ndevice: {kind: cpu}\nbackends: [torch, tensorr]\n")
    with pytest.raises(ConfigError, match=r"unknown backend 'tensorr'; valid choices: .*openvino.*\(did you mean 'tensorrt'\?\)"):
        load_target(p)


def test_tvm_gets_the_newest_llvm_cpu_the_isa_allows():
    import platform

    from planner.target import cpu_isa, _llvm_mcpu

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86-64 only")
    assert _llvm_mcpu(cpu_isa(AMX_CPUINFO)) == "sapphirerapids"
    assert _llvm_mcpu(cpu_isa(AVX512_VNNI_CPUINFO)) == "cascadelake"
    assert _llvm_mcpu(cpu_isa(AVX2_CPUINFO)) == "haswell"


def test_probed_gpu_gets_its_sm_count_from_torch_device_properties():
    """`planner probe` fills ``sm_count`` from torch's device properties (nvidia-smi has no such field); a faked
    properties object with torch's attribute names stands in for an H200."""
    from types import SimpleNamespace

    from planner.target import GPU, gpu_section

    smi = {"name": "NVIDIA H200", "compute_capability": "9.0", "memory_gb": 139.8}
    props = SimpleNamespace(name="NVIDIA H200", major=9, minor=0, total_memory=150_121_594_880, multi_processor_count=132)
    g = gpu_section(smi, props)
    assert g == {**smi, "sm_count": 132}
    t = Target(name="h", device={"kind": "cuda", "gpu": GPU(**g)}, precisions=["fp32", "fp16"])
    assert "sm_count: 132" in t.to_yaml()
    assert gpu_section(smi, None) == smi  # no torch/CUDA here: nvidia-smi's facts alone
    assert "sm_count" not in gpu_section(smi, SimpleNamespace(name="NVIDIA L4", multi_processor_count=58))  # another GPU
