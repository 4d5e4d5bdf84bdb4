"""A user decoder from Hugging Face ``transformers``: tiny Llama and GPT-2 built from configs
(no download), returned as-is; planner wraps them (`planner.llm.hf.HFDecoder`)."""

import torch


def build():
    """Llama: RoPE, RMSNorm, gated SiLU MLP, grouped-query attention (4 query heads, 2 key/value heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def build_gpt2():
    """GPT-2 (its projections are transformers ``Conv1D``, not ``nn.Linear``)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=512, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()
