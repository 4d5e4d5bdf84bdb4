"""Tiny models for the OpenVINO backend tests: a conv net and a 2-layer BERT-style transformer (the zoo's
bert-mini architecture, scaled down).  Inputs are given by the tests (`INPUT_SPECS`)."""

import torch
import torch.nn.functional as F
from torch import nn

from planner.model import InputSpec

SEQ, VOCAB = 16, 500
INPUT_SPECS = {
    "conv_net": (InputSpec("x", (3, 16, 16), "float32"),),
    "tiny_bert": (InputSpec("input_ids", (SEQ,), "int64", 0, VOCAB), InputSpec("attention_mask", (SEQ,), "int64", 1, 2)),
}


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c2, self.b2 = nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 64, 3, stride=2, padding=1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(y + self.b2(self.c2(y)))
        return self.fc(F.relu(self.c3(y)).mean((2, 3)))


def conv_net():
    torch.manual_seed(0)
    return ConvNet().eval()


def tiny_bert():
    from planner.zoo import bert

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = bert.BertEncoder(vocab=VOCAB, hidden=64, layers=2, num_heads=4, intermediate=128, max_positions=SEQ)
        bert._init(model, torch.Generator().manual_seed(0))
    return model.eval()
