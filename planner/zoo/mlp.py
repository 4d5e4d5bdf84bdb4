"""``tiny-mlp``: a 3-layer MLP for tests (64 -> 128 -> 128 -> 10 logits); runs in microseconds."""

from __future__ import annotations

import torch
from torch import nn

from planner.model import InputSpec

INPUTS: tuple[InputSpec, ...] = (InputSpec("x", (64,), "float32"),)
OUTPUT_KIND = "logits"


class TinyMLP(nn.Module):
    def __init__(self, d_in: int = 64, hidden: int = 128, classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, classes)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))


def build(seed: int = 0) -> nn.Module:
    """Deterministic for a given ``seed``; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyMLP()
    return model.eval()
