"""Workload YAML: the example validates, mistakes give clear, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.errors import ConfigError
from planner.llm.workload import Workload, load_workload

ROOT = Path(__file__).resolve().parents[2]


def test_chat_example_loads():
    w = load_workload(ROOT / "experiments" / "chat.yaml")
    assert w.prompt_lengths == sorted(w.prompt_lengths) and w.generation_length > 0
    assert w.slo.ttft_ms and w.slo.tpot_ms and w.slo.percentile == "p99"
    w.check_model(1024)  # fits gpt-mini
    assert Workload.from_dict(w.to_dict()) == w


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "w.yaml"
    p.write_text(text)
    return p


BASE = "prompt_lengths: [128]\ngeneration_length: 16\n"


@pytest.mark.parametrize("text, expected", [
    (BASE + "promt: 3\n", ["promt: unknown key; valid keys:", "prompt_lengths"]),
    (BASE + "slo: {ttft_ms: 100, latency: 3}\n", ["slo.latency: unknown key; valid keys: percentile, tpot_ms, ttft_ms"]),
    ("prompt_lengths: [128, -4]\ngeneration_length: 16\n", ["prompt_lengths: ", "positive"]),
    ("prompt_lengths: [128]\ngeneration_length: -1\n", ["generation_length: ", "greater than or equal to 1"]),
    (BASE + "slo: {percentile: p95}\n", ["slo.percentile: ", "'p50', 'p90' or 'p99'"]),
    (BASE + "slo: {ttft_ms: 0}\n", ["slo.ttft_ms: ", "greater than 0"]),
    (BASE + "quality: {}\n", ["quality: ", "give max_disagreement, max_kl or both"]),
    (BASE + "batch_sizes: [1, 0]\n", ["batch_sizes: ", "positive"]),
    ("generation_length: 16\n", ["prompt_lengths: Field required"]),
])
def test_errors_are_clear_and_located(tmp_path, text, expected):
    with pytest.raises(ConfigError) as e:
        load_workload(_write(tmp_path, text))
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "w.yaml"))
    for part in expected:
        assert part in msg, msg


def test_every_problem_at_once_and_malformed_yaml(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_workload(_write(tmp_path, "prompt_lengths: [0]\ngeneration_length: 0\nslo: {percentile: p1}\n"))
    assert len(e.value.errors) == 3
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_workload(_write(tmp_path, "prompt_lengths: [1\n"))


def test_context_must_fit_the_model():
    w = Workload(prompt_lengths=[1000], generation_length=64)
    with pytest.raises(ConfigError, match="1064 exceeds the model's 1024 positions"):
        w.check_model(1024)
    assert w.eval_prompt_length == 1000
    assert Workload(prompt_lengths=[512, 128], generation_length=8).eval_prompt_length == 128
