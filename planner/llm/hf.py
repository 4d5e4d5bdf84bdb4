"""Hugging Face ``transformers`` causal LMs as planner decoders.

A model factory may return any ``transformers`` causal LM (``LlamaForCausalLM``,
``GPT2LMHeadModel``, ... built from a config: planner downloads nothing).
`planner.source.ModelSource` wraps it in `HFDecoder`, which speaks the decoder API of
`planner.zoo.gpt.GPT` (``prefill``/``decode``/``cache_heads`` and the static-cache
``prefill_into``/``decode_static``/``empty_cache``), so the same runtimes serve it:

* eager torch: ``prefill``/``decode`` run the model with a ``DynamicCache`` rebuilt from
  the stacked ``[L,B,H,T,D]`` key/value tensors (H is the key/value head count, so
  grouped-query attention keeps its smaller cache);
* torch.compile: ``decode_static`` hands the model a ``StaticCache`` whose layers *are*
  slices of the preallocated cache, positioned at ``pos``; the model writes the step's
  keys/values in place and masks positions beyond ``pos`` itself;
* ONNX Runtime: `planner.llm.runtimes.export_decoder_onnx` exports ``prefill`` and
  ``decode`` (past/present tensors) through torch.export like ``gpt-mini``.

GPT-2's ``Conv1D`` projections are replaced by the equivalent ``nn.Linear`` when wrapping, so
int8 quantization reaches every projection.

``forward(input_ids) -> logits[B,V]`` of the last position is the zoo contract, so the
generic (non-LLM) path treats it like ``gpt-mini``.

Structured pruning (``l1``/``l2``/``heads``) removes FFN neurons only (Llama-style gated MLPs
``gate_proj``/``up_proj`` -> ``down_proj``, GPT-2 ``c_fc`` -> ``c_proj``): attention heads stay,
because transformers attention reshapes by the config's head counts (and grouped-query
attention ties query heads to key/value heads).  Sliding-window and recurrent cache layers
are refused when the model is wrapped.  ``transformers`` is imported only when a model already built by
the user's factory is wrapped (``pip install 'planner[hf]'``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from planner.errors import ConfigError
from planner.model import InputSpec

SEQ = 128  # prompt length of the generic (non-LLM) input spec, capped by the model's positions


@dataclass(frozen=True)
class DecoderConfig:
    """What the decoder runtimes read from a decoder's ``config``."""

    vocab: int
    max_positions: int


def is_hf_causal_lm(module: object) -> bool:
    """A ``transformers`` model that can generate (without importing transformers)."""
    names = {c.__name__ for c in type(module).__mro__}
    return "PreTrainedModel" in names and "GenerationMixin" in names


def _conv1d_to_linear(model: nn.Module) -> int:
    """Replace transformers ``Conv1D`` layers (GPT-2's ``x @ W + b``, W as [in, out]) by the
    equivalent ``nn.Linear`` (weight W^T), so quantizers that look for ``nn.Linear`` see every
    projection, not just the LM head.  Returns how many were replaced."""
    n = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ != "Conv1D" or getattr(child, "weight", None) is None or child.weight.dim() != 2:
                continue
            w = child.weight.detach()
            lin = nn.Linear(w.shape[0], w.shape[1], bias=child.bias is not None, device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w.t())
                if child.bias is not None:
                    lin.bias.copy_(child.bias.detach())
            setattr(parent, name, lin)
            n += 1
    return n


def _text_config(model):
    cfg = model.config
    return cfg.get_text_config(decoder=True) if hasattr(cfg, "get_text_config") else cfg


class HFDecoder(nn.Module):
    """A ``transformers`` causal LM behind planner's decoder API (see the module docstring)."""

    planner_prune_scope = "ffn"  # read by `planner.transforms.prune.prune`: FFN neurons only, attention untouched

    def __init__(self, model: nn.Module, where: str = "model"):
        super().__init__()
        self.hf = model.eval()
        tc = _text_config(model)
        vocab = getattr(tc, "vocab_size", None)
        maxpos = getattr(tc, "max_position_embeddings", None) or getattr(tc, "n_positions", None)
        if not vocab or not maxpos:
            raise ConfigError(f"{where}: {type(model).__name__} config lacks vocab_size/max_position_embeddings")
        kinds = set(getattr(tc, "layer_types", None) or ["full_attention"])
        if getattr(tc, "sliding_window", None) and getattr(tc, "use_sliding_window", True):
            kinds.add("sliding_attention")
        if kinds != {"full_attention"}:
            raise ConfigError(f"{where}: {type(model).__name__} has {sorted(kinds)} layers; planner's decoder "
                              "runtimes support full-attention KV caches only")
        self.config = DecoderConfig(int(vocab), int(maxpos))
        self.model_class = type(model).__name__
        self.converted_conv1d = _conv1d_to_linear(self.hf)

    # ------------------------------------------------------------------ generic contract
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=input_ids, use_cache=False, logits_to_keep=1).logits[:, -1]

    def input_specs(self) -> tuple[InputSpec, ...]:
        return (InputSpec("input_ids", (min(SEQ, self.config.max_positions),), "int64", 0, self.config.vocab),)

    # ------------------------------------------------------------------ cache geometry
    @property
    def num_layers(self) -> int:
        return int(_text_config(self.hf).num_hidden_layers)

    def cache_heads(self) -> tuple[int, int]:
        """(key/value heads, head dim) of every layer's cache."""
        tc = _text_config(self.hf)
        heads = int(tc.num_attention_heads)
        kv = getattr(tc, "num_key_value_heads", None) or heads
        dim = getattr(tc, "head_dim", None) or tc.hidden_size // heads
        return int(kv), int(dim)

    def empty_cache(self, batch: int, length: int, dtype=torch.float32, device="cpu"):
        h, d = self.cache_heads()
        shape = (self.num_layers, batch, h, length, d)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)

    # ------------------------------------------------------------------ dynamic cache
    @staticmethod
    def _stacked(cache) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.stack([layer.keys for layer in cache.layers]), torch.stack([layer.values for layer in cache.layers])

    def prefill(self, input_ids: torch.Tensor, last_only: bool = False):
        from transformers import DynamicCache

        out = self.hf(input_ids=input_ids, past_key_values=DynamicCache(config=self.hf.config), use_cache=True,
                      logits_to_keep=1 if last_only else 0)
        k, v = self._stacked(out.past_key_values)
        return out.logits, k, v

    def decode(self, input_ids: torch.Tensor, past_k: torch.Tensor, past_v: torch.Tensor):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=list(zip(past_k.unbind(0), past_v.unbind(0))), config=self.hf.config)
        out = self.hf(input_ids=input_ids, past_key_values=cache, use_cache=True)
        k, v = self._stacked(out.past_key_values)
        return out.logits, k, v

    # ------------------------------------------------------------------ static cache
    def prefill_into(self, input_ids: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor) -> torch.Tensor:
        logits, k, v = self.prefill(input_ids, last_only=True)
        t = input_ids.shape[1]
        k_cache[:, :, :, :t].copy_(k)
        v_cache[:, :, :, :t].copy_(v)
        return logits

    def decode_static(self, input_ids: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                      pos: torch.Tensor) -> torch.Tensor:
        from transformers import StaticCache

        cache = StaticCache(config=self.hf.config, max_cache_len=k_cache.shape[3])
        # StaticLayer internals (keys/values/cumulative_length/is_initialized) as of transformers 5.23, pinned in
        # pyproject's `hf` extra; tests/llm/test_llm_hf.py compares with transformers' own generate
        for i, layer in enumerate(cache.layers):  # the preallocated cache, written in place at `pos`
            layer.keys, layer.values = k_cache[i], v_cache[i]
            layer.cumulative_length = pos.reshape(()).clone()  # one counter per layer: each update advances its own
            layer.dtype, layer.device = k_cache.dtype, k_cache.device
            layer.is_initialized = True
        b = input_ids.shape[0]
        out = self.hf(input_ids=input_ids, past_key_values=cache, use_cache=True, cache_position=pos,
                      position_ids=pos.view(1, 1).expand(b, 1))
        return out.logits
