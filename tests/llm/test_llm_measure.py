"""TTFT / TPOT measurement and the SLO constraint function."""

from __future__ import annotations

import math

import pytest

from planner.llm.measure import aggregate, llm_constraints, llm_metrics, measure_llm, measure_workload
from planner.llm.workload import Workload
from planner.target import Protocol

FAST = Protocol(warmup_iters=2, warmup_seconds=0.0, min_repeats=12, min_seconds=0.0, max_seconds=10.0,
                cv_threshold=10.0, max_remeasure=0)


@pytest.fixture(scope="module")
def eager(tiny):
    from planner.llm.runtimes import EagerDecoder

    return EagerDecoder(tiny)


def test_metrics_present_positive_and_tpot_below_ttft_for_long_prompt(eager):
    m = measure_llm(eager, prompt_length=192, batch=2, generation_length=16, protocol=FAST)
    for k in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "tokens_per_s"):
        assert m[k] > 0 and math.isfinite(m[k]), k
    assert (m["prompt_length"], m["batch"], m["generation_length"]) == (192, 2, 16)
    assert m["ttft_stats"]["n"] >= 3 and m["tpot_stats"]["n"] >= 12  # max_seconds may cut the slow side short
    assert m["ttft_p50_ms"] <= m["ttft_p99_ms"] and m["tpot_p50_ms"] <= m["tpot_p99_ms"]
    assert m["tokens_per_s"] == pytest.approx(2 / (m["tpot_mean_ms"] / 1e3))
    assert m["tpot_p50_ms"] < m["ttft_p50_ms"], "a decode step on a 192-token cache must beat a 192-token prefill"


def test_tpot_walks_generations_restarting_from_the_prefill_state():
    """The TPOT loop decodes generation_length - 1 steps, then resumes from the post-prefill state."""
    import numpy as np

    from planner.llm.measure import measure_tpot
    from planner.llm.runtimes import DecoderRuntime

    class Recorder(DecoderRuntime):
        vocab = 7
        positions: list = []

        def prefill(self, ids):
            return np.zeros((ids.shape[0], 7), np.float32), ids.shape[1]

        def decode(self, tokens, state):
            self.positions.append(state)
            return np.zeros((len(tokens), 7), np.float32), state + 1

    rt = Recorder()
    stats = measure_tpot(rt, np.zeros((1, 10), np.int64), generation_length=4, protocol=FAST)
    assert stats.n >= 12
    assert rt.positions[:7] == [10, 11, 12, 10, 11, 12, 10]


def test_workload_aggregate_is_worst_case(eager):
    w = Workload(prompt_lengths=[8, 64], generation_length=4, batch_sizes=[1])
    res = measure_workload(eager, w, batch=1, protocol=FAST)
    assert [m["prompt_length"] for m in res["by_prompt"]] == [8, 64]
    assert res["ttft_p99_ms"] == max(m["ttft_p99_ms"] for m in res["by_prompt"])
    assert res["tokens_per_s"] == min(m["tokens_per_s"] for m in res["by_prompt"])
    assert res["ttft_stats"]["p99_ms"] == res["ttft_p99_ms"]


def _metrics(ttft=50.0, tpot=5.0, disagreement=0.0, kl=0.0):
    per = {"prompt_length": 8, "batch": 1, "generation_length": 4, "tokens_per_s": 200.0}
    for name, v in (("ttft", ttft), ("tpot", tpot)):
        per.update({f"{name}_{p}_ms": v for p in ("p50", "p90", "p99")})
        per.update({f"{name}_mean_ms": v, f"{name}_cv": 0.0, f"{name}_stats": {}})
    llm = {k: v for k, v in aggregate([per]).items() if not k.endswith("_stats")}
    return {"status": "ok", "llm": llm, "quality": {"disagreement": disagreement, "kl_mean": kl,
                                                    "quality_loss": disagreement}}


def test_impossible_slo_is_infeasible_and_a_loose_one_feasible():
    res = _metrics()
    impossible = Workload(prompt_lengths=[8], generation_length=4, slo={"ttft_ms": 1e-6, "tpot_ms": 1e3})
    c = llm_constraints(llm_metrics(res), impossible)
    assert set(c) == {"ttft_slo", "tpot_slo", "quality"}
    assert c["ttft_slo"] > 0 and c["tpot_slo"] <= 0 and c["quality"] <= 0
    assert not all(v <= 0 for v in c.values())
    loose = Workload(prompt_lengths=[8], generation_length=4, slo={"ttft_ms": 1e3, "tpot_ms": 1e3, "percentile": "p50"})
    assert all(v <= 0 for v in llm_constraints(llm_metrics(res), loose).values())
    # the nested result dict works too, and the quality bound follows the workload's metric
    kl_bound = Workload(prompt_lengths=[8], generation_length=4, quality={"max_kl": 0.01})
    assert llm_constraints(_metrics(kl=0.5), kl_bound)["quality"] == pytest.approx(0.49)
    both = Workload(prompt_lengths=[8], generation_length=4, quality={"max_disagreement": 0.1, "max_kl": 0.01})
    c = llm_constraints(_metrics(kl=0.5), both)
    assert c["quality_kl"] == pytest.approx(0.49) and c["quality"] == pytest.approx(-0.1)
    assert llm_constraints({"llm": {}}, impossible)["ttft_slo"] == math.inf  # missing = violated


def test_constraint_on_a_real_measurement(eager):
    w = Workload(prompt_lengths=[16], generation_length=4, slo={"ttft_ms": 1e-6})
    res = {"llm": measure_workload(eager, w, batch=1, protocol=FAST), "quality": {"disagreement": 0.0}}
    c = llm_constraints(llm_metrics(res), w)
    assert c["ttft_slo"] > 0 and "tpot_slo" not in c
