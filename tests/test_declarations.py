"""Every capability is declared once; these checks fail when two declarations disagree.

The scheme/precision table (planner.schemes), each backend class's declarations (read through the registry),
the targets, the search spaces and the pip extras in pyproject.toml must agree with each other.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import planner.backends.registry as registry
from planner.schemes import PRECISIONS, SCHEMES, gpu_precisions

ROOT = Path(__file__).resolve().parents[1]
CLASSES = {n: registry.get(n) for n in registry.REGISTRY}
DEVICES = ("cpu", "cuda")


def test_scheme_rows_are_consistent():
    for name, s in SCHEMES.items():
        assert s.name == name and s.precision in PRECISIONS
        assert set(s.devices) <= set(DEVICES) and s.formats and set(s.formats) <= {"torch", "onnx"}
        for option, values in s.options.items():
            assert isinstance(values, tuple) and values, (name, option)
        for option, order in s.lossier.items():  # an order of the option's own values
            assert set(order) <= set(s.options[option]), (name, option)
        assert set(s.same_grid) <= set(s.options) and not set(s.same_grid) & set(s.lossier), name


def test_transforms_implement_what_the_table_says():
    from planner.transforms import quantize

    assert set(quantize.TORCH_SCHEMES) == {n for n, s in SCHEMES.items() if "torch" in s.formats}
    assert set(quantize.ONNX_SCHEMES) == {n for n, s in SCHEMES.items() if "onnx" in s.formats}
    assert set(quantize.CALIBRATED) == {n for n, s in SCHEMES.items() if s.calibrated}
    # one registered handler per (scheme, format) the table lists, and none besides
    assert set(quantize.HANDLERS) == {(n, f) for n, s in SCHEMES.items() for f in s.formats}


def test_a_handler_for_a_format_the_table_does_not_list_is_refused():
    from planner.transforms.quantize import handles

    with pytest.raises(ValueError, match="not a row"):
        handles("bf16", "onnx")


@pytest.mark.parametrize("name", list(CLASSES))
def test_backend_declarations_agree_with_the_tables(name):
    cls = CLASSES[name]
    assert cls.name == name
    assert set(cls.devices) <= set(DEVICES)
    assert cls.input_format in ("torch", "onnx")
    unknown = set(cls.quant_schemes) - set(SCHEMES)
    assert not unknown, f"{name} declares schemes the table lacks: {unknown}"
    for scheme, devices in cls.scheme_devices.items():
        assert scheme in cls.quant_schemes and set(devices) <= set(SCHEMES[scheme].devices), (name, scheme)
    for scheme, options in cls.scheme_options.items():
        assert scheme in cls.quant_schemes and set(options) <= set(SCHEMES[scheme].options), (name, scheme)
    if cls.decoder_schemes is not None:
        assert set(cls.decoder_schemes) <= set(cls.quant_schemes), name
    else:
        assert cls.decoder_note, f"{name}: no decoder runtime, and no note saying why"
    assert set(cls.distributions) <= set(cls.modules), name
    assert cls.engine_files, f"{name} declares no engine file to export"
    assert cls.triton is None or cls.triton.split(":")[0] in ("platform", "backend"), cls.triton
    from planner.backends.base import Backend

    assert cls.load_artifact.__func__ is not Backend.load_artifact.__func__, f"{name} declares no engine loader"


def test_pip_extras_exist_in_pyproject():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, cls in CLASSES.items():
        if cls.pip_extra:
            assert cls.pip_extra in extras, f"{name}: pip extra {cls.pip_extra!r} is not in pyproject.toml"
            dists = [d.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for d in extras[cls.pip_extra]]
            for module in cls.modules:
                assert cls.distributions.get(module, module).lower() in dists, (name, module, dists)


def test_main_engine_files_name_one_loader():
    """Two backends may write the same engine file only when they load it the same way (torch / torch_compile)."""
    by_file: dict[str, set] = {}
    for cls in CLASSES.values():
        by_file.setdefault(cls.engine_files[0], set()).add(cls.load_artifact.__func__.__code__)
    assert all(len(loaders) == 1 for loaders in by_file.values()), by_file
    for file, _ in by_file.items():
        assert registry.by_engine_file(file).engine_files[0] == file


def test_gpu_precision_rules_follow_the_precision_table():
    assert gpu_precisions("7.5") == ["fp32", "fp16", "int8"]
    assert gpu_precisions("8.0") == ["fp32", "fp16", "bf16", "int8", "int4"]
    assert "fp8" in gpu_precisions("9.0") and "fp8" not in gpu_precisions("8.6")


def test_shipped_targets_and_spaces_name_registered_backends():
    from planner.space import load_space
    from planner.target import load_target

    for path in sorted((ROOT / "targets").glob("*.yaml")):
        t = load_target(path)
        assert set(t.backends) <= set(registry.all_backends()) and set(t.precisions) <= set(PRECISIONS)
    for path in sorted((ROOT / "search_spaces").glob("*.yaml")):
        space = load_space(path)
        assert set(space.backends) <= set(registry.all_backends()), path.name


@pytest.mark.parametrize("name", list(CLASSES))
def test_backend_options_are_one_declaration(name):
    """`options` (what spaces may name) is derived from the `Options` model: every option has a default that
    validates, a choice option lists its default first, and the defaults are what an empty config resolves to."""
    cls = CLASSES[name]
    fields = cls.Options.model_fields
    assert list(cls.options) == list(fields), name
    defaults = cls.resolve_options({})
    for k, f in fields.items():
        assert not f.is_required(), f"{name}.{k} has no default"
        assert defaults[k] == f.default and f.description, (name, k)
        if isinstance(cls.options[k], tuple) and f.default is not None:
            assert cls.options[k][0] == f.default, f"{name}.{k}: the default is not the first choice"


def test_an_options_dict_on_a_backend_is_refused():
    from planner.backends.base import Backend

    with pytest.raises(TypeError, match="class Options"):
        type("Bad", (Backend,), {"name": "bad", "options": {"x": (1, 2)}, "compile": lambda *a: None})
