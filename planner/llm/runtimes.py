"""Decoder runtimes: prefill + KV-cache decode per backend.

Every runtime takes numpy token ids and returns float32 numpy logits:

* ``prefill(ids[B,T]) -> (logits[B,V] of the last prompt position, state)``: one call that
  processes the prompt and populates the KV cache (what TTFT times);
* ``decode(tokens[B] or [B,1], state) -> (logits[B,V], state)``: one decode step (what TPOT
  times).  ``decode`` never invalidates the state it was given *logically*: calling it
  again with an earlier state (e.g. the one right after prefill) restarts the generation
  from there, which is how the TPOT measurement loops over a generation without re-running
  the prefill inside the timed region;
* ``generate(ids, n) -> tokens[B,n]``: greedy generation (the first token from prefill).

Backends (``cfg.backend``):

``torch``
    eager PyTorch, "past in / present out" cache grown by concatenation
    (`GPT.prefill` / `GPT.decode`).
``torch_compile``
    Inductor on static shapes: a preallocated cache of ``cache_len`` positions per batch
    size (the workload's longest prompt + generation, rounded up to 64), written in place
    at a position tensor with a mask over unused positions (`GPT.prefill_into` /
    `GPT.decode_static`).  One compiled decode graph serves the whole generation; the
    prefill is compiled once per prompt length (``dynamic=True`` compiles one
    shape-generic prefill).  Options as the `torch_compile` backend: mode, freezing, dynamic.
    One live generation per batch size: a new prefill overwrites the cache.
``onnxruntime``
    two exported graphs, ``prefill.onnx`` (input_ids -> logits, present_k, present_v) and
    ``decode.onnx`` (input_ids, past_k, past_v -> logits, present_k, present_v), dynamic
    batch/sequence/past axes, sessions from `planner.backends.onnxruntime.make_session`
    (same options); caches stay ORT-owned (``run_with_ort_values``) between steps.
``openvino``
    one exported step graph (``step.onnx``: any number of new tokens on a past of any length, `export_step_onnx`)
    converted by OpenVINO (``nncf.compress_weights`` for the weight-only schemes) and made stateful: its past
    keys/values are OpenVINO state (ReadValue/Assign) held by the infer request, so prefill (an empty cache, the
    prompt's tokens) and decode steps feed only token ids (`planner.backends.openvino.build_decoder_engine`).
    One compiled model; one live generation.
``llamacpp``
    llama.cpp on a GGUF file written from the model's own GGUF by llama.cpp's quantizer (scheme ->
    F32 / F16 / Q8_0 / Q4_K_M, Q4_0, Q4_1: `planner.backends.llamacpp`); the batch's sequences share one
    KV cache (sequence ids), ``n_batch`` prompt tokens per ``llama_decode`` call during prefill.
``tvm`` / ``tensorrt``
    not implemented for decoders: ``CandidateFailed(UNSUPPORTED)``.  (TVM would need a
    Relax KV-cache model, i.e. MLC-LLM; out of scope.)

Quantization: ``int8_dynamic`` / ``int8_weight_only`` (and fp16/bf16 casts) through
`planner.transforms.quantize.quantize_torch` for the torch backends; ``int8_dynamic``
(MatMul/Gemm) and ``int4_weight_only`` (MatMulNBits) through `quantize_onnx` on both graphs
for ONNX Runtime.  Pruning (heads/FFN)
is applied before, by `ModelSource.torch_module`.

A model qualifies as a decoder when it has ``config.vocab``/``config.max_positions``,
``prefill``, ``decode``, ``cache_heads`` (and for torch_compile ``prefill_into``/
``decode_static``/``empty_cache``) with the signatures of `planner.zoo.gpt.GPT`.
"""

from __future__ import annotations

import copy
import json
import logging
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from planner.errors import CandidateFailed, FailReason

CACHE_ROUND = 64
DECODER_METHODS = ("prefill", "decode", "cache_heads")
STATIC_METHODS = ("prefill_into", "decode_static", "empty_cache")


def decoder_backends() -> list[str]:
    """The backends with a decoder runtime (each declares `Backend.decoder_schemes`)."""
    import planner.backends.registry as registry

    return [n for n, cls in registry.classes().items() if cls.decoder_schemes is not None]


def check_decoder_config(backend: str, scheme: str) -> str | None:
    """Why (backend, quant scheme) cannot run as a decoder here; None when it can."""
    import planner.backends.registry as registry

    if backend not in registry.all_backends():
        return f"no decoder runtime for backend {backend!r} (decoder backends: {', '.join(decoder_backends())})"
    cls = registry.get(backend)
    if cls.decoder_schemes is None:
        return cls.decoder_note or f"no decoder runtime for backend {backend!r} " \
                                   f"(decoder backends: {', '.join(decoder_backends())})"
    if scheme not in cls.decoder_schemes:
        return f"{backend} decoder runtime does not implement quantization scheme {scheme!r} " \
               f"(implemented: {', '.join(cls.decoder_schemes)})"
    return None


def cache_length(max_context: int, max_positions: int | None = None) -> int:
    """Static cache length: ``max_context`` rounded up to `CACHE_ROUND`, within the model's positions."""
    n = -(-int(max_context) // CACHE_ROUND) * CACHE_ROUND
    return min(n, max_positions) if max_positions else n


def check_is_decoder(module, static: bool = False) -> None:
    need = DECODER_METHODS + (STATIC_METHODS if static else ())
    missing = [m for m in need if not callable(getattr(module, m, None))]
    cfg = getattr(module, "config", None)
    if not all(hasattr(cfg, a) for a in ("vocab", "max_positions")):
        missing.append("config.vocab/config.max_positions")
    if missing:
        raise CandidateFailed(FailReason.UNSUPPORTED,
                              f"model {type(module).__name__} is not a KV-cache decoder: it lacks {missing} "
                              "(see planner.zoo.gpt.GPT for the decoder API)")


def _tokens(tokens: np.ndarray) -> np.ndarray:
    t = np.asarray(tokens, dtype=np.int64)
    return t.reshape(-1, 1) if t.ndim == 1 else t


# --------------------------------------------------------------------------- base


class DecoderRuntime(ABC):
    """A compiled decoder: prefill and one-token decode steps on numpy ids."""

    name: str = "decoder"
    device: str = "cpu"

    @abstractmethod
    def prefill(self, ids: np.ndarray) -> tuple[np.ndarray, Any]:
        """Process a prompt ``ids[B,T]``; return the last position's logits ``[B,V]`` and the cache state."""

    @abstractmethod
    def decode(self, tokens: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
        """One step: ``tokens[B]`` (or ``[B,1]``) at the state's position; logits ``[B,V]`` and the new state."""

    def generate(self, ids: np.ndarray, n: int) -> np.ndarray:
        """Greedy generation of ``n`` tokens per sequence; ``[B,n]`` int64."""
        ids = np.asarray(ids, dtype=np.int64)
        logits, state = self.prefill(ids)
        out = [logits.argmax(-1)]
        for _ in range(n - 1):
            logits, state = self.decode(out[-1], state)
            out.append(logits.argmax(-1))
        self.synchronize()
        return np.stack(out, axis=1).astype(np.int64)

    def warmup(self, prompt_lengths: list[int], batch: int, steps: int = 2) -> None:
        """Run every shape the workload will use (triggers compilation where there is one)."""
        rng = np.random.default_rng(0)
        vocab = getattr(self, "vocab", 2)
        for t in prompt_lengths:
            ids = rng.integers(0, vocab, size=(batch, t)).astype(np.int64)
            logits, state = self.prefill(ids)
            for _ in range(steps):
                logits, state = self.decode(logits.argmax(-1), state)
        self.synchronize()

    def synchronize(self) -> None:
        """Wait for queued device work (GPU); no-op on CPU."""

    def close(self) -> None:
        """Release resources."""

    def info(self) -> dict[str, Any]:
        return {"runtime": self.name, "device": self.device}


# --------------------------------------------------------------------------- torch


class _TorchBase(DecoderRuntime):
    def __init__(self, module, device: str = "cpu"):
        import torch

        self._torch = torch
        self.module = module
        self.device = device
        self.vocab = int(module.config.vocab) if hasattr(module, "config") else 2
        self.dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
        if self.dtype not in (torch.float16, torch.bfloat16):
            self.dtype = torch.float32  # int8 modules keep float activations

    def _ids(self, ids: np.ndarray):
        return self._torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)).to(self.device)

    def _out(self, logits) -> np.ndarray:
        return logits[:, -1].float().cpu().numpy()

    def synchronize(self) -> None:
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()


@dataclass
class EagerState:
    k: Any
    v: Any


class EagerDecoder(_TorchBase):
    """Eager PyTorch; the cache grows by concatenation (``GPT.decode``)."""

    name = "torch"

    def prefill(self, ids):
        with self._torch.inference_mode():
            logits, k, v = self.module.prefill(self._ids(ids), last_only=True)
            return self._out(logits), EagerState(k, v)

    def decode(self, tokens, state: EagerState):
        with self._torch.inference_mode():
            logits, k, v = self.module.decode(self._ids(_tokens(tokens)), state.k, state.v)
            return self._out(logits), EagerState(k, v)


@dataclass
class StaticState:
    batch: int
    pos: int  # next position to write


class CompiledDecoder(_TorchBase):
    """torch.compile on static shapes: preallocated cache, in-place writes at a position tensor."""

    name = "torch_compile"

    def __init__(self, module, cache_len: int, device: str = "cpu", mode: str = "default",
                 dynamic_prefill: bool = False):
        super().__init__(module, device)
        torch = self._torch
        self.cache_len = int(cache_len)
        self.mode = mode
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self._prefill = torch.compile(module.prefill_into, mode=mode, dynamic=bool(dynamic_prefill))
            self._decode = torch.compile(module.decode_static, mode=mode, dynamic=False)
        self._caches: dict[int, tuple] = {}
        self._pos = {}  # pos -> tensor, built once (no per-step allocation)

    def _cache(self, batch: int):
        if batch not in self._caches:
            self._caches[batch] = self.module.empty_cache(batch, self.cache_len, self.dtype, self.device)
        return self._caches[batch]

    def _pos_t(self, pos: int):
        t = self._pos.get(pos)
        if t is None:
            t = self._pos[pos] = self._torch.tensor([pos], dtype=self._torch.int64, device=self.device)
        return t

    def prefill(self, ids):
        b, t = np.shape(ids)
        if t >= self.cache_len:
            raise ValueError(f"prompt of {t} tokens does not fit the static cache of {self.cache_len}")
        k, v = self._cache(b)
        with self._torch.inference_mode():
            logits = self._prefill(self._ids(ids), k, v)
            return self._out(logits), StaticState(b, t)

    def decode(self, tokens, state: StaticState):
        if state.pos >= self.cache_len:
            raise ValueError(f"position {state.pos} is beyond the static cache of {self.cache_len}")
        k, v = self._cache(state.batch)
        with self._torch.inference_mode():
            logits = self._decode(self._ids(_tokens(tokens)), k, v, self._pos_t(state.pos))
            return self._out(logits), StaticState(state.batch, state.pos + 1)

    def info(self):
        return {**super().info(), "cache_len": self.cache_len, "mode": self.mode, "cache": "static"}


# --------------------------------------------------------------------------- ONNX Runtime


@dataclass
class OrtState:
    k: Any  # OrtValue (or numpy)
    v: Any


class OrtDecoder(DecoderRuntime):
    """Two ONNX Runtime sessions (prefill, decode) with past/present key-value tensors."""

    name = "onnxruntime"

    def __init__(self, prefill_session, decode_session, vocab: int, device: str = "cpu"):
        import onnxruntime as ort

        self._ort = ort
        self.prefill_session = prefill_session
        self.decode_session = decode_session
        self.vocab = vocab
        self.device = device
        self._outs = ["logits", "present_k", "present_v"]

    def _val(self, a: np.ndarray):
        return self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(a))

    def prefill(self, ids):
        logits, k, v = self.prefill_session.run_with_ort_values(
            self._outs, {"input_ids": self._val(np.asarray(ids, dtype=np.int64))})
        return logits.numpy(), OrtState(k, v)

    def decode(self, tokens, state: OrtState):
        logits, k, v = self.decode_session.run_with_ort_values(
            self._outs, {"input_ids": self._val(_tokens(tokens)), "past_k": state.k, "past_v": state.v})
        return logits.numpy(), OrtState(k, v)

    def info(self):
        return {**super().info(), "providers": self.prefill_session.get_providers(), "cache": "past/present"}


# --------------------------------------------------------------------------- OpenVINO


@dataclass
class OvState:
    prefill: int  # which prefill of the runtime this generation belongs to
    pos: int  # next position to write (the cache holds positions 0..pos-1)


class OpenVinoDecoder(DecoderRuntime):
    """OpenVINO on the CPU: one compiled stateful step graph (`step_graph`, made stateful by
    `planner.backends.openvino.make_decoder_stateful`): its past keys/values are OpenVINO state, so prefill and decode
    steps feed the token ids alone and the cache stays in the infer request.

    A prefill resets the state to an empty cache of the batch (``[L, B, H, 0, D]``) and runs the prompt through the
    same graph; a decode step runs one token.  Decoding from an earlier state of the same generation (TPOT restarting
    from the post-prefill state) first cuts the state back to that position; a state of an earlier prefill is refused,
    as with torch_compile's static cache: the engine holds one live generation."""

    name = "openvino"

    def __init__(self, compiled, vocab: int, cache_dims: tuple[int, int, int]):
        import openvino as ov

        self._ov = ov
        self.compiled = compiled
        self.vocab = vocab
        self.device = "cpu"
        self.layers, self.heads, self.head_dim = (int(d) for d in cache_dims)
        self._req = compiled.create_infer_request()
        self._states = {}
        for st in self._req.query_state():
            for past in ("past_k", "past_v"):
                if st.name.startswith(past):
                    self._states[past] = st
        if sorted(self._states) != ["past_k", "past_v"]:
            raise CandidateFailed(FailReason.COMPILE, "the OpenVINO decoder model has no past_k/past_v state "
                                  f"(states: {[st.name for st in self._req.query_state()]})")
        self._empty: dict[int, Any] = {}  # batch -> empty cache tensor
        self._prefills = 0  # prefills so far: the id of the live generation
        self._pos = 0  # the position the state is at

    def _reset(self, batch: int) -> None:
        """An empty cache for ``batch`` sequences (OpenVINO's own reset would give an empty batch axis too)."""
        empty = self._empty.get(batch)
        if empty is None:
            empty = self._empty[batch] = self._ov.Tensor(
                np.zeros((self.layers, batch, self.heads, 0, self.head_dim), dtype=np.float32))
        for st in self._states.values():
            st.state = empty

    def _step(self, ids: np.ndarray) -> np.ndarray:
        self._req.infer([np.ascontiguousarray(ids, dtype=np.int64)], share_inputs=True)
        return np.array(self._req.get_output_tensor(0).data, copy=True)

    def prefill(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        self._reset(ids.shape[0])
        logits = self._step(ids)
        self._prefills += 1
        self._pos = ids.shape[1]
        return logits, OvState(self._prefills, self._pos)

    def _rewind(self, pos: int) -> None:
        """Keep the first ``pos`` positions of the cache state."""
        for st in self._states.values():
            cur = st.state
            shape = list(cur.get_shape())
            shape[3] = pos
            cut = self._ov.Tensor(cur.get_element_type(), shape)
            cut.data[...] = cur.data[:, :, :, :pos]  # same element size (bf16 reads as a 2-byte view)
            st.state = cut
        self._pos = pos

    def decode(self, tokens, state: OvState):
        if state.prefill != self._prefills or state.pos > self._pos:
            raise ValueError("OpenVINO decoder: this state belongs to an earlier prefill; the engine holds one "
                             "live generation (its state is overwritten by each prefill)")
        if state.pos < self._pos:
            self._rewind(state.pos)
        logits = self._step(_tokens(tokens))
        self._pos = state.pos + 1
        return logits, OvState(state.prefill, self._pos)

    def info(self):
        return {**super().info(), "cache": "openvino state (stateful step graph)"}  # properties: in the build info


# --------------------------------------------------------------------------- llama.cpp


@dataclass
class LlamaCppState:
    pos: int  # next position to write (every sequence of the batch is at the same position)


class LlamaCppDecoder(DecoderRuntime):
    """llama.cpp (`planner.backends.llamacpp.LlamaCppEngine`): one context holding the batch's sequences in its
    KV cache; a decode from an earlier state drops the cache entries after it first (``llama_memory_seq_rm``)."""

    name = "llamacpp"

    def __init__(self, engine):
        self.engine = engine
        self.vocab = engine.vocab

    def prefill(self, ids):
        ids = np.asarray(ids, dtype=np.int64)
        return self.engine.prefill(ids), LlamaCppState(ids.shape[1])

    def decode(self, tokens, state: LlamaCppState):
        return self.engine.decode(tokens, state.pos), LlamaCppState(state.pos + 1)

    def close(self) -> None:
        self.engine.close()

    def info(self):
        e = self.engine
        return {**super().info(), "threads": e.threads, "n_batch": e.n_batch, "n_ctx_per_seq": e.n_ctx_per_seq,
                "cache": "llama.cpp kv cache"}


# --------------------------------------------------------------------------- export


def export_decoder_onnx(module, prefill_path: Path, decode_path: Path) -> None:
    """Export ``PrefillGraph`` and ``DecodeGraph`` of a decoder (dynamic batch, sequence and past axes)."""
    import torch

    from planner.zoo.gpt import DecodeGraph, PrefillGraph

    vocab = int(module.config.vocab)
    maxpos = int(module.config.max_positions)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=1, max=maxpos)
    past = torch.export.Dim("past", min=1, max=maxpos - 1)
    ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(5))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        _, k, v = module.prefill(ids)
        prog = torch.onnx.export(PrefillGraph(module).eval(), (ids,), input_names=["input_ids"],
                                 output_names=["logits", "present_k", "present_v"],
                                 dynamic_shapes=({0: batch, 1: seq},), dynamo=True, external_data=False,
                                 optimize=True, verbose=False)
        prog.save(str(prefill_path), external_data=False)
        prog = torch.onnx.export(DecodeGraph(module).eval(), (ids[:, :1], k, v),
                                 input_names=["input_ids", "past_k", "past_v"],
                                 output_names=["logits", "present_k", "present_v"],
                                 dynamic_shapes=({0: batch}, {1: batch, 3: past}, {1: batch, 3: past}),
                                 dynamo=True, external_data=False, optimize=True, verbose=False)
        prog.save(str(decode_path), external_data=False)


def export_step_onnx(module, path: Path) -> None:
    """Export the step graph of a decoder: ``(input_ids[B,S], past_k[L,B,H,P,D], past_v) -> (logits[B,V] of the last
    new token, present_k[..P+S..], present_v)`` with dynamic batch, token and past axes; with an empty past (P = 0) it
    is the prefill.  Traced at 3 new tokens on a past of 8 with both axes declared >= 2, so the traced attention is
    the causally masked multi-token path (`GPT.decode`'s one-token branch is not taken; transformers builds its mask
    for any length), which is exact for one token and for an empty past too: ONNX does not enforce the declared
    minimum, and tests/llm/test_llm_openvino.py checks both ends against eager generation."""
    import torch

    from planner.zoo.gpt import DecodeGraph

    vocab = int(module.config.vocab)
    maxpos = int(module.config.max_positions)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("seq", min=2, max=maxpos)
    past = torch.export.Dim("past", min=2, max=maxpos - 1)
    ids = torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(5))
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        _, k, v = module.prefill(ids)
        prog = torch.onnx.export(DecodeGraph(module).eval(), (ids[:, :3], k, v),
                                 input_names=["input_ids", "past_k", "past_v"],
                                 output_names=["logits", "present_k", "present_v"],
                                 dynamic_shapes=({0: batch, 1: seq}, {1: batch, 3: past}, {1: batch, 3: past}),
                                 dynamo=True, external_data=False, optimize=True, verbose=False)
        prog.save(str(path), external_data=False)


def step_graph(source, cfg, module) -> tuple[Path, bool]:
    """(step.onnx, cached): `export_step_onnx` of the transformed fp32 decoder, exported once per (model, transforms,
    torch version) into the planner's `ArtifactCache`, as `onnx_graphs`."""
    import tempfile

    from planner.cache import ArtifactCache, cache_key
    from planner.source import torch_version

    cache = ArtifactCache(source.cache_dir / "artifacts")
    key = cache_key("onnx-decoder-step-export", source.model_hash(), source.transform_key(cfg), torch_version())
    hit = cache.get(key)
    cached = hit is not None
    if hit is None:
        source.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=source.cache_dir) as tmp:
            step = Path(tmp) / "step.onnx"
            export_step_onnx(module, step)
            hit = cache.put(key, {"step.onnx": step})
    return hit / "step.onnx", cached


def onnx_graphs(source, cfg, module) -> tuple[Path, Path, bool]:
    """(prefill.onnx, decode.onnx, cached) of the transformed fp32 decoder, exported once per
    (model, transforms, torch version) into the planner's `ArtifactCache` (``<cache>/artifacts``)."""
    import tempfile

    from planner.cache import ArtifactCache, cache_key
    from planner.source import torch_version

    cache = ArtifactCache(source.cache_dir / "artifacts")
    key = cache_key("onnx-decoder-export", source.model_hash(), source.transform_key(cfg), torch_version())
    hit = cache.get(key)
    cached = hit is not None
    if hit is None:
        source.cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=source.cache_dir) as tmp:
            pre, dec = Path(tmp) / "prefill.onnx", Path(tmp) / "decode.onnx"
            export_decoder_onnx(module, pre, dec)
            hit = cache.put(key, {"prefill.onnx": pre, "decode.onnx": dec})
    return hit / "prefill.onnx", hit / "decode.onnx", cached


# --------------------------------------------------------------------------- build


@dataclass
class DecoderBuild:
    runtime: DecoderRuntime
    artifacts: list[Path] = field(default_factory=list)
    compile_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def build_decoder(source, cfg, target, workdir: Path, cache_len: int,
                  warm: tuple[list[int], int] | None = None) -> DecoderBuild:
    """Build the decoder runtime of ``cfg`` (backend, quantization, options) for ``target``.

    ``source`` is a `planner.source.ModelSource` (pruning applied through ``torch_module``);
    ``cache_len`` is the static cache length (torch_compile); ``warm`` = (prompt lengths,
    batch) runs every shape once so that compilation is counted in ``compile_seconds``.
    """
    why = check_decoder_config(cfg.backend, cfg.quant.scheme)
    if why:
        raise CandidateFailed(FailReason.UNSUPPORTED, why)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    module = source.torch_module(cfg)
    check_is_decoder(module, static=cfg.backend == "torch_compile")
    try:
        module.cache_heads()
    except ValueError as e:
        raise CandidateFailed(FailReason.UNSUPPORTED, str(e)) from None
    t0 = time.perf_counter()
    from planner.backends import registry

    opts = registry.get(cfg.backend).resolve_options(cfg.options())  # every option, the declared defaults filled in
    info: dict[str, Any] = {"backend": cfg.backend, "quant": cfg.quant.scheme}
    artifacts: list[Path] = []
    device = "cuda" if target.is_gpu else "cpu"
    if cfg.backend in ("torch", "torch_compile"):
        rt = _build_torch(module, cfg, device, cache_len, opts, source)
    elif cfg.backend == "llamacpp":
        from planner.backends.llamacpp import build_engine

        engine, artifacts, more = build_engine(module, cfg, target, workdir, source.cache_dir, cache_len)
        info.update(more)
        rt = LlamaCppDecoder(engine)
    elif cfg.backend == "openvino":
        from planner.backends.openvino import build_decoder_engine

        step, cached = step_graph(source, cfg, module)
        info["onnx_export_cached"] = cached
        compiled, artifacts, dims = build_decoder_engine(source, cfg, target, workdir, step, info)
        rt = OpenVinoDecoder(compiled, int(module.config.vocab), dims)
    else:
        rt, artifacts = _build_ort(source, cfg, target, module, workdir, info)
    if warm is not None:
        prompts, batch = warm
        rt.warmup(list(prompts), int(batch))
    compile_s = time.perf_counter() - t0
    info.update(rt.info())
    desc = workdir / "decoder.json"
    desc.write_text(json.dumps({"config": cfg.to_dict(), "cache_len": cache_len, **info}, indent=2, default=str))
    artifacts.append(desc)
    return DecoderBuild(rt, artifacts, compile_s, info)


def _build_torch(module, cfg, device, cache_len, opts, source) -> DecoderRuntime:
    import torch

    from planner.transforms.quantize import quantize_torch, record_quant_info

    if cfg.quant.active:
        vocab = int(module.config.vocab)
        example = (torch.randint(0, vocab, (2, 8), generator=torch.Generator().manual_seed(11)),)
        module = quantize_torch(copy.deepcopy(module), cfg.quant, example)
        record_quant_info(module, source.transform_info)
    module = module.to(device).eval()
    if cfg.backend == "torch":
        return EagerDecoder(module, device)
    import torch._inductor.config as inductor_config

    inductor_config.freezing = opts["freezing"]
    return CompiledDecoder(module, cache_len, device, mode=opts["mode"], dynamic_prefill=opts["dynamic"])


def _build_ort(source, cfg, target, module, workdir: Path, info: dict) -> tuple[DecoderRuntime, list[Path]]:
    import shutil

    from planner.backends.onnxruntime import session_json, make_session

    pre_src, dec_src, cached = onnx_graphs(source, cfg, module)
    info["onnx_export_cached"] = cached
    pre, dec = workdir / "prefill.onnx", workdir / "decode.onnx"
    if cfg.quant.active:
        from planner.transforms.quantize import quantize_onnx

        info["quant_prefill"] = quantize_onnx(pre_src, pre, cfg.quant, None)
        info["quant_decode"] = quantize_onnx(dec_src, dec, cfg.quant, None)
    else:
        shutil.copyfile(pre_src, pre)
        shutil.copyfile(dec_src, dec)
    opts = cfg.options()
    sp = make_session(pre, opts, target)
    sd = make_session(dec, opts, target)
    (workdir / "session.json").write_text(session_json(opts, target))
    rt = OrtDecoder(sp, sd, int(module.config.vocab), "cuda" if target.is_gpu else "cpu")
    return rt, [pre, dec, workdir / "session.json"]
