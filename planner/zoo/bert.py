"""``bert-mini``: a MiniLM-L6-sized BERT encoder with random weights, mean-pooled to one embedding.

vocab 30522, hidden 384, 6 layers, 12 heads x 32, FFN 1536 (GELU), 512 positions, post-LN
(LayerNorm eps 1e-12) as in BERT; weights ~ N(0, 0.02), LayerNorm 1/0, biases 0.
Inputs ``input_ids`` and ``attention_mask`` (B, 128) int64; output: the mask-weighted mean
of the last hidden state, (B, 384).

Module names are stable for pruners: ``encoder.layers[i].attn.{q,k,v,o}`` (``nn.Linear``;
heads are contiguous ``head_dim``-wide slices of q/k/v outputs and of o's input) with
``attn.num_heads`` / ``attn.head_dim`` read at run time, and ``encoder.layers[i].ffn.{fc1,fc2}``.
To drop heads, reslice q/k/v rows, o columns and set ``num_heads``; to drop neurons, reslice
fc1 rows and fc2 columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from planner.model import InputSpec

VOCAB = 30522
HIDDEN = 384
LAYERS = 6
HEADS = 12
INTERMEDIATE = 1536
MAX_POSITIONS = 512
SEQ = 128
LN_EPS = 1e-12
# Additive mask for padded keys: large but finite, so it also survives float16 and rows
# whose keys are all masked do not turn into NaN.
MASK_VALUE = -10000.0

INPUTS: tuple[InputSpec, ...] = (
    InputSpec("input_ids", (SEQ,), "int64", 0, VOCAB, length_axis=0),
    InputSpec("attention_mask", (SEQ,), "int64", 1, 2, length_axis=0),
)
OUTPUT_KIND = "embedding"


class SelfAttention(nn.Module):
    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        inner = num_heads * self.head_dim
        self.q = nn.Linear(hidden, inner)
        self.k = nn.Linear(hidden, inner)
        self.v = nn.Linear(hidden, inner)
        self.o = nn.Linear(inner, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        h, d = self.num_heads, self.head_dim

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, S, H*D) -> (B, H, S, D)
            return t.view(b, s, h, d).transpose(1, 2)

        y = F.scaled_dot_product_attention(heads(self.q(x)), heads(self.k(x)), heads(self.v(x)), attn_mask=mask)
        return self.o(y.transpose(1, 2).reshape(b, s, h * d))


class FeedForward(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate)
        self.fc2 = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderLayer(nn.Module):
    def __init__(self, hidden: int, num_heads: int, intermediate: int):
        super().__init__()
        self.attn = SelfAttention(hidden, num_heads)
        self.ln1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.ffn = FeedForward(hidden, intermediate)
        self.ln2 = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.attn(x, mask))  # post-LN, as in BERT
        return self.ln2(x + self.ffn(x))


class Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, num_heads: int, intermediate: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(hidden, num_heads, intermediate) for _ in range(layers))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_positions: int):
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_positions, hidden)
        self.token_type = nn.Embedding(2, hidden)  # every token is segment 0
        self.ln = nn.LayerNorm(hidden, eps=LN_EPS)
        self.register_buffer("position_ids", torch.arange(max_positions), persistent=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        s = input_ids.shape[1]
        x = self.word(input_ids) + self.position(self.position_ids[:s]) + self.token_type.weight[0]
        return self.ln(x)


class BertEncoder(nn.Module):
    def __init__(self, vocab: int = VOCAB, hidden: int = HIDDEN, layers: int = LAYERS, num_heads: int = HEADS,
                 intermediate: int = INTERMEDIATE, max_positions: int = MAX_POSITIONS):
        super().__init__()
        self.embeddings = Embeddings(vocab, hidden, max_positions)
        self.encoder = Encoder(layers, hidden, num_heads, intermediate)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(input_ids)
        m = attention_mask.to(x.dtype)  # (B, S), 1 = token, 0 = padding
        additive = ((1.0 - m) * MASK_VALUE)[:, None, None, :]  # (B, 1, 1, S), broadcast over heads and queries
        h = self.encoder(x, additive)
        w = m.unsqueeze(-1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1e-9)


@torch.no_grad()
def _init(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():  # BERT's init
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(0.0, 0.02, generator=g)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def build(seed: int = 0) -> nn.Module:
    """Deterministic for a given ``seed``; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertEncoder()
        _init(model, torch.Generator().manual_seed(seed))
    return model.eval()
