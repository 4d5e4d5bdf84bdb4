"""A tiny text encoder whose inputs declare a length axis (token ids and a mask padded with 0 to 32), with
evaluation sentences of many lengths: for tests of served traffic at the requests' own lengths."""

import numpy as np
import torch

from planner.model import InputSpec
from planner.zoo.bert import BertEncoder

SEQ, VOCAB = 32, 64
INPUTS = (InputSpec("input_ids", (SEQ,), "int64", 1, VOCAB, length_axis=0),
          InputSpec("attention_mask", (SEQ,), "int64", 1, 2, length_axis=0))
OUTPUT_KIND = "embedding"


def tiny_encoder():
    torch.manual_seed(0)
    return BertEncoder(vocab=VOCAB, hidden=32, layers=1, num_heads=2, intermediate=64, max_positions=SEQ).eval()


def dataset():
    """64 samples: lengths 3..32 (most short, as real sentences are), padded with 0."""
    rng = np.random.default_rng(0)
    lengths = np.minimum(SEQ, 3 + rng.geometric(0.12, size=64))
    ids = np.zeros((64, SEQ), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(1, VOCAB, size=n)
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}
