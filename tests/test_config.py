from planner.config import PruneConfig, QuantConfig, TrialConfig, freeze_options


def make():
    return TrialConfig("onnxruntime", 8, freeze_options({"graph_optimization_level": "all", "intra_op_threads": 2}),
                       PruneConfig("l1", 0.3, 16), QuantConfig("int8_static", freeze_options({"per_channel": True})))


def test_roundtrip_and_stable_key():
    c = make()
    again = TrialConfig.from_dict(c.to_dict())
    assert again == c and hash(again) == hash(c)
    assert again.key() == c.key()
    assert c.key() != TrialConfig.from_dict({**c.to_dict(), "batch_size": 1}).key()


def test_option_order_does_not_change_key():
    a = TrialConfig("x", 1, freeze_options({"a": 1, "b": 2}))
    b = TrialConfig("x", 1, freeze_options({"b": 2, "a": 1}))
    assert a.key() == b.key()


def test_flat_and_describe():
    c = make()
    flat = c.flat()
    assert flat["backend_options.graph_optimization_level"] == "all"
    assert flat["quant.options.per_channel"] is True
    assert flat["prune.ratio"] == 0.3
    assert c.precision == "int8"
    assert "int8_static[per_channel=True]" in c.describe() and "prune:l1=0.3[round_to=16]" in c.describe()
    # configs that differ only in the rounding or the distillation's learning rate have different labels
    from dataclasses import replace

    from planner.config import DistillConfig

    students = [replace(c, prune=PruneConfig("l1", 0.3, rt), distill=DistillConfig(steps=300, lr=lr))
                for rt in (8, 16) for lr in (0.001, 0.003)]
    assert len({s.describe() for s in students}) == 4
    assert "distill=300[lr=0.003]" in students[-1].describe()
    assert "round_to" not in replace(c, prune=PruneConfig("magnitude", 0.3)).describe()  # no rounding to speak of
