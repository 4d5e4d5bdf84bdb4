"""Selection on decoder fronts: the policies rank by the response a workload's request takes (TTFT + (gen-1) TPOT)."""

from planner.select.pareto import Fastest, FastestWithin, Knee, MostAccurate, Point, response_ms


def _decoder(number, ttft, tpot, quality, gen=64, latency=None):
    m = {"ttft_ms": ttft, "tpot_ms": tpot, "generation_length": gen, "quality_loss": quality,
         "latency_ms": ttft if latency is None else latency}
    return Point(number, {"batch_size": 1}, f"d{number}", m, None)


def test_response_is_first_token_plus_the_rest_of_the_generation():
    assert response_ms(_decoder(0, 50.0, 10.0, 0.0, gen=64)) == 50.0 + 63 * 10.0
    assert response_ms(_decoder(0, 50.0, 10.0, 0.0, gen=1)) == 50.0
    plain = Point(1, {}, "x", {"latency_ms": 3.0, "quality_loss": 0.0}, None)
    assert response_ms(plain) == 3.0  # not a decoder: its latency


def test_policies_pick_by_tpot_when_ttft_ties():
    slow_tokens, fast_tokens = _decoder(0, 40.0, 12.0, 0.01), _decoder(1, 40.0, 8.0, 0.01)
    front = [slow_tokens, fast_tokens]
    assert Fastest().select(front) is fast_tokens
    assert Fastest().select(front[::-1]) is fast_tokens
    assert FastestWithin(0.05).select(front) is fast_tokens
    assert MostAccurate().select(front) is fast_tokens  # equal quality: the shorter response
    assert Knee().select(front) is fast_tokens


def test_fastest_weighs_the_generation_not_the_first_token_alone():
    quick_start = _decoder(0, 20.0, 15.0, 0.0)  # 20 + 63*15 = 965 ms
    quick_tokens = _decoder(1, 80.0, 10.0, 0.0)  # 80 + 63*10 = 710 ms
    assert Fastest().select([quick_start, quick_tokens]) is quick_tokens
    short = [_decoder(0, 20.0, 15.0, 0.0, gen=2), _decoder(1, 80.0, 10.0, 0.0, gen=2)]
    assert Fastest().select(short) is short[0]  # two tokens: the first token dominates


def test_knee_trades_response_against_quality():
    fast_bad, mid, slow_good = _decoder(0, 10.0, 5.0, 0.30), _decoder(1, 12.0, 6.0, 0.02), _decoder(2, 40.0, 20.0, 0.0)
    assert Knee().select([fast_bad, mid, slow_good]) is mid


def test_registry_tags_show_both_figures_of_a_decoder():
    from planner.select.registry import version_tags

    tags = version_tags(_decoder(3, 40.0, 8.0, 0.01, gen=5), "s")
    assert (tags["ttft_ms"], tags["tpot_ms"], tags["response_ms"]) == ("40", "8", "72")
    assert "ttft_ms" not in version_tags(Point(1, {}, "x", {"latency_ms": 3.0, "quality_loss": 0.0}, None), "s")
