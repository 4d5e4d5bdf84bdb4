"""``gpt-mini``: a GPT-2-style decoder with random weights and an explicit KV cache.

vocab 32000, hidden 512, 6 layers, 8 heads x 64, FFN 2048 (GELU, ``fc1``/``fc2``), 1024
learned positions, pre-LN (LayerNorm eps 1e-5), final LayerNorm, LM head tied to the token
embedding (``tie_embeddings=False`` unties it); weights ~ N(0, 0.02), LayerNorm 1/0, biases 0.
About 36 M parameters (tied).  ``build_tiny()`` is a 2-layer, hidden-64, vocab-512 version
for tests.

Entry points (B batch, T tokens, L layers, H heads, D head_dim, V vocab, M cache length):

* ``forward(input_ids[B,T]) -> logits[B,V]``: the zoo contract (``INPUTS``/``OUTPUT_KIND``):
  next-token logits of the last position, so the generic planner path (reference
  outputs, quality, ONNX export with a dynamic batch) treats the model as a classifier
  over the next token instead of storing B*T*V logits.
* ``prefill(input_ids[B,T], last_only=False) -> (logits[B,T,V] (or [B,1,V]), k[L,B,H,T,D], v)``:
  causal attention over the prompt; returns the cache it populated.
* ``decode(input_ids[B,S], past_k[L,B,H,P,D], past_v) -> (logits[B,S,V], k[L,B,H,P+S,D], v)``:
  a dynamic-length cache (concatenation), positions start at P; S is 1 for a decode
  step.  This is the "past in, present out" form exported to ONNX.
* ``decode_static(input_ids[B,1], k_cache[L,B,H,M,D], v_cache, pos[1]) -> logits[B,1,V]``:
  a preallocated cache of fixed length M written in place at ``pos`` (an int64 tensor,
  shared by the whole batch); keys beyond ``pos`` are masked.  Every shape is static, so
  torch.compile compiles it once for a whole generation.
* ``prefill_into(input_ids[B,T], k_cache, v_cache) -> logits[B,1,V]``: prefill that writes
  its keys/values into a preallocated cache (positions 0..T-1); static-shape companion of
  ``decode_static``.

`PrefillGraph` and `DecodeGraph` wrap ``prefill(last_only=True)`` and ``decode`` as plain
tensor-in/tensor-out modules for torch.export / ONNX export.

Module names are stable for pruners (like ``bert-mini``): ``layers[i].attn.{q,k,v,o}``
(``nn.Linear``, heads are contiguous ``head_dim`` slices; ``attn.num_heads`` /
``attn.head_dim`` are read at run time, never the model width) and ``layers[i].ffn.{fc1,fc2}``.
After head pruning the caches have the layer's (uniform) pruned head count:
`GPT.cache_heads` reads it from the modules.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from planner.model import InputSpec

VOCAB = 32000
HIDDEN = 512
LAYERS = 6
HEADS = 8
INTERMEDIATE = 2048
MAX_POSITIONS = 1024
SEQ = 128  # prompt length of INPUTS (the generic, non-LLM path)
LN_EPS = 1e-5

INPUTS: tuple[InputSpec, ...] = (InputSpec("input_ids", (SEQ,), "int64", 0, VOCAB),)
OUTPUT_KIND = "logits"


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = VOCAB
    hidden: int = HIDDEN
    layers: int = LAYERS
    heads: int = HEADS
    intermediate: int = INTERMEDIATE
    max_positions: int = MAX_POSITIONS
    tie_embeddings: bool = True


TINY = GPTConfig(vocab=512, hidden=64, layers=2, heads=4, intermediate=256, max_positions=256)
TINY_INPUTS: tuple[InputSpec, ...] = (InputSpec("input_ids", (16,), "int64", 0, TINY.vocab),)


class Attention(nn.Module):
    def __init__(self, hidden: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden // num_heads
        inner = num_heads * self.head_dim
        self.q = nn.Linear(hidden, inner)
        self.k = nn.Linear(hidden, inner)
        self.v = nn.Linear(hidden, inner)
        self.o = nn.Linear(inner, hidden)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:  # (B, S, H*D) -> (B, H, S, D)
        b, s, _ = t.shape
        return t.view(b, s, self.num_heads, self.head_dim).transpose(1, 2)

    def _merge(self, y: torch.Tensor) -> torch.Tensor:  # (B, H, S, D) -> (B, S, H*D)
        b, h, s, d = y.shape
        return self.o(y.transpose(1, 2).reshape(b, s, h * d))

    def prefill(self, x: torch.Tensor):
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self._merge(y), k, v

    def decode(self, x: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        """New tokens attend to the whole past and causally among themselves."""
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        k = torch.cat([past_k, k], dim=2)
        v = torch.cat([past_v, v], dim=2)
        s, total = q.shape[2], k.shape[2]
        if s == 1:
            y = F.scaled_dot_product_attention(q, k, v)
        else:  # several new tokens: query i sees keys up to past + i
            qi = torch.arange(s, device=x.device)[:, None] + (total - s)
            mask = torch.arange(total, device=x.device)[None, :] <= qi
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self._merge(y), k, v

    def decode_static(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      pos: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Write this token's key/value at ``pos`` of the (B, H, M, D) caches, in place; attend under ``mask``."""
        q, k, v = self._heads(self.q(x)), self._heads(self.k(x)), self._heads(self.v(x))
        k_cache.index_copy_(2, pos, k)
        v_cache.index_copy_(2, pos, v)
        y = F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask)
        return self._merge(y)


class FeedForward(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden, intermediate)
        self.fc2 = nn.Linear(intermediate, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, hidden: int, num_heads: int, intermediate: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.attn = Attention(hidden, num_heads)
        self.ln2 = nn.LayerNorm(hidden, eps=LN_EPS)
        self.ffn = FeedForward(hidden, intermediate)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig = GPTConfig()):
        super().__init__()
        c = self.config = config
        self.wte = nn.Embedding(c.vocab, c.hidden)
        self.wpe = nn.Embedding(c.max_positions, c.hidden)
        self.layers = nn.ModuleList(Block(c.hidden, c.heads, c.intermediate) for _ in range(c.layers))
        self.ln_f = nn.LayerNorm(c.hidden, eps=LN_EPS)
        self.lm_head = nn.Linear(c.hidden, c.vocab, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight

    # -------------------------------------------------------------- cache shape
    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def cache_heads(self) -> tuple[int, int]:
        """(heads, head_dim) of the KV cache; all layers must agree (true after uniform head pruning)."""
        hs = {(b.attn.num_heads, b.attn.head_dim) for b in self.layers}
        if len(hs) != 1:
            raise ValueError(f"layers have different attention shapes {sorted(hs)}: a stacked KV cache needs one")
        return hs.pop()

    def empty_cache(self, batch: int, length: int, dtype=torch.float32, device="cpu"):
        """Zeroed (k, v) caches of shape (L, B, H, length, D)."""
        h, d = self.cache_heads()
        shape = (self.num_layers, batch, h, length, d)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

    # ----------------------------------------------------------------- helpers
    def _embed(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        return self.wte(input_ids) + self.wpe(positions)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(x))

    def _ffn(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        return x + block.ffn(block.ln2(x))

    # ------------------------------------------------------------- entry points
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, V) of the last prompt position."""
        return self.prefill(input_ids, last_only=True)[0][:, -1]

    def prefill(self, input_ids: torch.Tensor, last_only: bool = False):
        t = input_ids.shape[1]
        x = self._embed(input_ids, torch.arange(t, device=input_ids.device))
        ks, vs = [], []
        for block in self.layers:
            a, k, v = block.attn.prefill(block.ln1(x))
            x = self._ffn(block, x + a)
            ks.append(k)
            vs.append(v)
        if last_only:
            x = x[:, -1:]
        return self._head(x), torch.stack(ks), torch.stack(vs)

    def decode(self, input_ids: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        p, s = past_k.shape[3], input_ids.shape[1]
        x = self._embed(input_ids, torch.arange(s, device=input_ids.device) + p)
        ks, vs = [], []
        for i, block in enumerate(self.layers):
            a, k, v = block.attn.decode(block.ln1(x), past_k[i], past_v[i])
            x = self._ffn(block, x + a)
            ks.append(k)
            vs.append(v)
        return self._head(x), torch.stack(ks), torch.stack(vs)

    def decode_static(self, input_ids: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      pos: torch.Tensor) -> torch.Tensor:
        pos = pos.reshape(1)
        x = self._embed(input_ids, pos)
        m = k_cache.shape[3]
        mask = (torch.arange(m, device=input_ids.device) <= pos).view(1, 1, 1, m)
        for i, block in enumerate(self.layers):
            x = self._ffn(block, x + block.attn.decode_static(block.ln1(x), k_cache[i], v_cache[i], pos, mask))
        return self._head(x)

    def prefill_into(self, input_ids: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        logits, k, v = self.prefill(input_ids, last_only=True)
        t = input_ids.shape[1]
        k_cache[:, :, :, :t].copy_(k)
        v_cache[:, :, :, :t].copy_(v)
        return logits


class PrefillGraph(nn.Module):
    """``input_ids[B,T] -> (logits[B,V] of the last position, present_k[L,B,H,T,D], present_v)``, for export."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor):
        logits, k, v = self.model.prefill(input_ids, last_only=True)
        return logits[:, -1], k, v


class DecodeGraph(nn.Module):
    """``(input_ids[B,1], past_k[L,B,H,P,D], past_v) -> (logits[B,V], present_k[..P+1..], present_v)``, for export."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        logits, k, v = self.model.decode(input_ids, past_k, past_v)
        return logits[:, -1], k, v


@torch.no_grad()
def _init(model: nn.Module, g: torch.Generator) -> None:
    for m in model.modules():  # GPT-2's init (without the residual-projection rescaling)
        if isinstance(m, (nn.Linear, nn.Embedding)):
            m.weight.normal_(0.0, 0.02, generator=g)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
        elif isinstance(m, nn.LayerNorm):
            m.weight.fill_(1.0)
            m.bias.zero_()


def build_config(config: GPTConfig, seed: int = 0) -> GPT:
    """Deterministic for a given ``seed``; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT(config)
        _init(model, torch.Generator().manual_seed(seed))
    return model.eval()


def build(seed: int = 0) -> GPT:
    return build_config(GPTConfig(), seed)


def build_tiny(seed: int = 0) -> GPT:
    """2 layers, hidden 64, 4 heads, FFN 256, vocab 512, 256 positions: for tests."""
    return build_config(TINY, seed)
