"""Teacher-forced quality of a decoder runtime against fp32 eager.

The evaluation set is a fixed, seeded token matrix ``[N, P + F]``.  The reference is one
fp32 eager causal forward over each whole sequence (`reference_logits`); the candidate
runs its *own* serving path (`teacher_forced_logits`): ``prefill`` on the first ``P``
tokens, then ``F`` decode steps fed the true next tokens (not its own predictions), so
errors of the KV-cache handling show up too.  Both give the ``F + 1`` next-token
distributions at positions ``P-1 .. P+F-1``.

Metrics (`llm_quality`):

* ``agreement``: fraction of positions whose argmax (greedy next token) equals fp32's;
  ``disagreement = 1 - agreement``;
* ``kl_mean`` / ``kl_max``: KL(fp32 || candidate) in nats per position;
* ``ppl_reference`` / ``ppl`` / ``ppl_delta``: perplexity of the forced tokens and the
  relative change.

``quality_loss`` is ``disagreement``.  Why not KL or perplexity: on a random-weight model
(the zoo's gpt-mini) every next-token distribution is close to uniform (max probability
~6x 1/V) and the forced tokens are random, so perplexity sits near the vocabulary size
for any candidate, and a constant, uniform output has a small KL (~0.1 nats for gpt-mini)
-- it would pass a loose KL bound.  The argmax, however, depends on the context (the
reference's greedy tokens are spread over many vocabulary entries), so a constant output
agrees on only a few percent of positions: its quality_loss is close to 1.  On trained
models KL and perplexity become meaningful too; a workload may bound ``kl_mean`` instead
(`planner.llm.workload.QualityBound`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from planner.llm.runtimes import DecoderRuntime


def eval_tokens(vocab: int, sequences: int, prompt_length: int, forced_tokens: int, seed: int = 0) -> np.ndarray:
    """Fixed seeded token set ``[sequences, prompt_length + forced_tokens]`` int64."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(sequences, prompt_length + forced_tokens)).astype(np.int64)


def reference_continuation(module, prompts: np.ndarray, forced_tokens: int, chunk: int = 8) -> np.ndarray:
    """``[N, P + F]``: real prompts followed by the fp32 eager model's own greedy continuation of F tokens."""
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(prompts), chunk):
            ids = torch.from_numpy(np.ascontiguousarray(prompts[s:s + chunk], dtype=np.int64))
            logits, k, v = module.prefill(ids, last_only=True)
            toks = [logits[:, -1].argmax(-1)]
            for _ in range(int(forced_tokens) - 1):
                logits, k, v = module.decode(toks[-1].view(-1, 1), k, v)
                toks.append(logits[:, -1].argmax(-1))
            out.append(torch.cat([ids, torch.stack(toks, 1)], 1).numpy())
    return np.concatenate(out).astype(np.int64)


def reference_logits(module, tokens: np.ndarray, prompt_length: int, chunk: int = 8) -> np.ndarray:
    """fp32 eager next-token logits ``[N, F+1, V]`` at positions ``P-1 .. P+F-1`` (one causal pass per sequence)."""
    import torch

    out = []
    with torch.inference_mode():
        for s in range(0, len(tokens), chunk):
            ids = torch.from_numpy(np.ascontiguousarray(tokens[s:s + chunk]))
            logits = module.prefill(ids)[0]
            out.append(logits[:, prompt_length - 1:].float().numpy())
    return np.concatenate(out)


def teacher_forced_logits(rt: "DecoderRuntime", tokens: np.ndarray, prompt_length: int, batch: int) -> np.ndarray:
    """The runtime's logits ``[N, F+1, V]``: prefill of the first P tokens, then F forced decode steps.

    Sequences run ``batch`` at a time (the last group padded by repeating sequences)."""
    n, total = tokens.shape
    forced = total - prompt_length
    out = []
    for s in range(0, n, batch):
        idx = np.arange(s, s + batch) % n
        seq = tokens[idx]
        logits, state = rt.prefill(seq[:, :prompt_length])
        steps = [logits]
        for j in range(forced):
            logits, state = rt.decode(seq[:, prompt_length + j], state)
            steps.append(logits)
        out.append(np.stack(steps, axis=1)[: min(batch, n - s)])
    rt.synchronize()
    return np.concatenate(out).astype(np.float32, copy=False)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def llm_quality(ref: np.ndarray, cand: np.ndarray, tokens: np.ndarray | None = None,
                prompt_length: int | None = None) -> dict[str, Any]:
    """Compare candidate logits with the fp32 reference (both ``[N, F+1, V]``); see the module doc.

    ``tokens``/``prompt_length`` (the eval set) enable the perplexity metrics."""
    ref = np.asarray(ref)
    cand = np.asarray(cand)
    if ref.shape != cand.shape:
        raise ValueError(f"candidate logits {cand.shape} differ in shape from the reference {ref.shape}")
    if not np.isfinite(cand).all():
        return {"quality_loss": 1.0, "agreement": 0.0, "disagreement": 1.0, "kl_mean": float("inf"),
                "kl_max": float("inf"), "nonfinite_outputs": 1.0, "positions": int(np.prod(ref.shape[:-1]))}
    lr, lc = _log_softmax(ref), _log_softmax(cand)
    kl = (np.exp(lr) * (lr - lc)).sum(-1)
    agree = float((ref.argmax(-1) == cand.argmax(-1)).mean())
    m: dict[str, Any] = {
        "agreement": agree,
        "disagreement": 1.0 - agree,
        "kl_mean": float(max(0.0, kl.mean())),
        "kl_max": float(max(0.0, kl.max())),
        "max_abs_logit_error": float(np.abs(ref.astype(np.float64) - cand).max()),
        "positions": int(np.prod(ref.shape[:-1])),
    }
    if tokens is not None and prompt_length is not None and ref.shape[1] > 1:
        forced = ref.shape[1] - 1
        tgt = np.asarray(tokens)[:, prompt_length:prompt_length + forced]
        nll_r = -np.take_along_axis(lr[:, :forced], tgt[..., None], -1).mean()
        nll_c = -np.take_along_axis(lc[:, :forced], tgt[..., None], -1).mean()
        m["ppl_reference"] = float(np.exp(nll_r))
        m["ppl"] = float(np.exp(nll_c))
        m["ppl_delta"] = float(np.exp(nll_c - nll_r) - 1.0)  # relative change
    m["quality_loss"] = m["disagreement"]
    return m
