"""llama.cpp (``llama-cpp-python``): a GGUF file served by llama.cpp's own CPU kernels, for LLM decoders.

What it runs: the GGUF the model was loaded from (``planner_gguf`` on the transformers model, set by the
zoo's ``smollm2-135m``), rewritten by llama.cpp's quantizer (``llama_model_quantize``, requantizing:
the source's tensors are dequantized to float -- exactly the fp32 reference planner compares with -- and
quantized to the type asked for).  The GGUF type is the trial's quantization scheme mapped onto the
types llama.cpp writes; the int4 flavour is a backend option:

=====================  ==========================================================================
scheme                 GGUF type
=====================  ==========================================================================
``none``               ``F32`` (the reference itself, in llama.cpp's kernels)
``fp16``               ``F16``
``int8_weight_only``   ``Q8_0`` (blocks of 32 int8 weights, one fp16 scale)
``int4_weight_only``   option ``int4_type``: ``Q4_K_M`` (k-quants: super-blocks of 256, some tensors
                       Q6_K), ``Q4_0`` (blocks of 32, scale), ``Q4_1`` (blocks of 32, scale and min:
                       the type the packaged file ships, copied as it is)
=====================  ==========================================================================

Why a backend option and not new schemes: these *are* int8/int4 weight-only quantizations (float
activations, llama.cpp quantizes activations to 8 bits inside its dot products only where the kernel
wants it), so the target's precisions, the space's ``quantize.schemes`` and every other backend keep one
vocabulary; the block layout is how llama.cpp implements int4, as ``group_size`` is how torch and ONNX
Runtime do (the int4 scheme's ``group_size`` is not honoured: GGUF blocks are fixed).  The cost: a label
shows ``int4_type`` on trials of other schemes, where it is unused (the build info records the GGUF type
actually written, ``gguf_type``).

Options: ``threads`` (llama.cpp's threads for decode and prompt processing; default: the target's
threads), ``n_batch`` (prompt-processing batch: tokens per ``llama_decode`` call during prefill), and
``int4_type``.  Decoders only (``planner optimize --workload``): a study without a workload gets an
``unsupported`` trial; pruning and distillation are refused (the GGUF is the unpruned model).

`LlamaCppEngine` is the C context: ``prefill(ids[B,T]) -> logits[B,V]`` with B sequences in one
unified KV cache (sequence ids 0..B-1), ``decode(tokens[B], pos)`` one step for all of them, and
``rewind(pos)`` dropping cache entries at or after ``pos`` (how a decode from an earlier state
restarts).  `planner.llm.runtimes.LlamaCppDecoder` puts it behind the decoder interface.
"""

from __future__ import annotations

import ctypes
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, NonNegativeInt

from planner.backends.base import DECISIVE, Backend, BackendOptions, BuildResult, Runtime
from planner.errors import CandidateFailed, FailReason

# GGUF file types llama.cpp's quantizer writes here (llama_ftype values of llama.h)
FTYPES: dict[str, int] = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_S": 14, "Q4_K_M": 15}
INT4_TYPES: tuple[str, ...] = ("Q4_K_M", "Q4_0", "Q4_1")
SCHEME_TYPES: dict[str, str] = {"none": "F32", "fp16": "F16", "int8_weight_only": "Q8_0"}  # int4: the option
N_BATCH: tuple[int, ...] = (512, 32, 64, 128, 256)


class LlamaCppOptions(BackendOptions):
    threads: NonNegativeInt = Field(0, description="llama.cpp threads (0: the target's threads)")
    n_batch: Literal[N_BATCH] = Field(N_BATCH[0], description="tokens per llama_decode call in the prefill")
    int4_type: Literal[INT4_TYPES] = Field(INT4_TYPES[0], description="the GGUF type of int4_weight_only",
                                           json_schema_extra=DECISIVE)


def gguf_type(scheme: str, options: dict[str, Any]) -> str:
    """The GGUF type a trial's scheme (and ``int4_type`` option) maps to."""
    if scheme == "int4_weight_only":
        return LlamaCpp.resolve_options(options)["int4_type"]
    return SCHEME_TYPES[scheme]


def source_gguf(module) -> Path | None:
    """The GGUF file a (wrapped) transformers model was loaded from, when it says (``planner_gguf``)."""
    hf = getattr(module, "hf", module)
    p = getattr(hf, "planner_gguf", None)
    return Path(p) if p and Path(p).is_file() else None


def file_type(path: Path) -> str | None:
    """The ``general.file_type`` of a GGUF file, as a name of `FTYPES` (None: other or unknown)."""
    try:
        from gguf import GGUFReader

        f = GGUFReader(str(path)).fields.get("general.file_type")
        v = int(f.parts[f.data[0]][0]) if f is not None else None
    except Exception:
        return None
    return next((k for k, x in FTYPES.items() if x == v), None)


def write_gguf(src: Path, dst: Path, gtype: str, threads: int) -> str:
    """Write ``src`` as GGUF type ``gtype`` to ``dst`` (llama.cpp's quantizer, requantizing from float);
    a source of that type already is copied.  Returns how ("copied" / "quantized")."""
    if file_type(src) == gtype:
        shutil.copyfile(src, dst)
        return "copied"
    import llama_cpp

    _init_backend()  # its log callback: the quantizer's per-tensor lines stay out of the worker log
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[gtype]
    params.nthread = int(threads)
    params.allow_requantize = True  # the source's quantized tensors are dequantized first: the fp32 reference
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0 or not dst.is_file():
        raise CandidateFailed(FailReason.COMPILE, f"llama.cpp could not write a {gtype} GGUF (llama_model_quantize "
                                                  f"returned {rc})")
    return "quantized"


def cached_gguf(src: Path, gtype: str, threads: int, cache_dir: Path) -> tuple[Path, bool]:
    """`write_gguf` through the planner's artifact cache: (path of the cached model.gguf, cache hit)."""
    import importlib.metadata
    import tempfile

    from planner.cache import ArtifactCache, cache_key

    st = src.stat()
    cache = ArtifactCache(cache_dir / "artifacts")
    key = cache_key("llamacpp-gguf", str(src.resolve()), st.st_size, st.st_mtime_ns, gtype,
                    importlib.metadata.version("llama-cpp-python"))
    hit = cache.get(key)
    if hit is not None:
        return hit / "model.gguf", True
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        out = Path(tmp) / "model.gguf"
        write_gguf(src, out, gtype, threads)
        hit = cache.put(key, {"model.gguf": out})
    return hit / "model.gguf", False


_QUIET_LOG = None  # llama.cpp's log callback; kept alive at module level once made


def _log(level, text, user_data):  # llama.cpp's own logging: silenced (its errors come back as return codes)
    return None


def _init_backend() -> None:
    global _QUIET_LOG
    if _QUIET_LOG is None:
        import llama_cpp

        _QUIET_LOG = llama_cpp.llama_log_callback(_log)
        llama_cpp.llama_log_set(_QUIET_LOG, ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()


class LlamaCppEngine:
    """One llama.cpp model + context with ``batch`` sequences (see the module docstring)."""

    def __init__(self, path: Path, batch: int, n_ctx_per_seq: int, threads: int, n_batch: int = 512):
        import llama_cpp as L
        import numpy as np

        _init_backend()
        self._L, self._np = L, np
        self.path, self.batch, self.threads, self.n_batch = Path(path), int(batch), int(threads), int(n_batch)
        mp = L.llama_model_default_params()
        mp.n_gpu_layers = 0
        self._model = L.llama_model_load_from_file(str(path).encode(), mp)
        if not self._model:
            raise CandidateFailed(FailReason.COMPILE, f"llama.cpp could not load {path.name}")
        cp = L.llama_context_default_params()
        cp.n_ctx = int(n_ctx_per_seq) * self.batch
        cp.n_batch = cp.n_ubatch = max(self.n_batch, self.batch)
        cp.n_seq_max = self.batch
        cp.n_threads = cp.n_threads_batch = self.threads
        if hasattr(cp, "kv_unified"):
            cp.kv_unified = True
        if hasattr(cp, "no_perf"):
            cp.no_perf = True
        self._ctx = L.llama_init_from_model(self._model, cp)
        if not self._ctx:
            L.llama_model_free(self._model)
            self._model = None
            raise CandidateFailed(FailReason.COMPILE, "llama.cpp could not create a context "
                                                      f"(n_ctx {cp.n_ctx}, batch {self.batch})")
        self.n_ctx_per_seq = int(n_ctx_per_seq)
        self.vocab = int(L.llama_vocab_n_tokens(L.llama_model_get_vocab(self._model)))
        self._mem = L.llama_get_memory(self._ctx)
        self._cap = cp.n_batch
        self._batch = L.llama_batch_init(self._cap, 0, self.batch)

    def _run(self, tokens, positions, seqs, want) -> None:
        """Decode one llama_batch; ``want[i]``: logits wanted for entry i."""
        b = self._batch
        n = len(tokens)
        for i in range(n):
            b.token[i] = int(tokens[i])
            b.pos[i] = int(positions[i])
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = int(seqs[i])
            b.logits[i] = 1 if want[i] else 0
        b.n_tokens = n
        rc = self._L.llama_decode(self._ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")

    def _logits(self, idx) -> "Any":
        np = self._np
        out = np.empty((len(idx), self.vocab), dtype=np.float32)
        for j, i in enumerate(idx):
            ptr = self._L.llama_get_logits_ith(self._ctx, int(i))
            out[j] = np.ctypeslib.as_array(ptr, shape=(self.vocab,))
        return out

    def rewind(self, pos: int) -> None:
        """Forget every sequence's cache entries at positions >= ``pos``."""
        self._L.llama_memory_seq_rm(self._mem, -1, int(pos), -1)

    def prefill(self, ids) -> "Any":
        """A new prompt per sequence ``ids[B,T]`` (B = the engine's batch); logits ``[B,V]`` of the last position."""
        np = self._np
        ids = np.asarray(ids, dtype=np.int64)
        bsz, t = ids.shape
        if bsz != self.batch:
            raise ValueError(f"batch {bsz}: this llama.cpp context holds {self.batch} sequences")
        if t >= self.n_ctx_per_seq:
            raise ValueError(f"prompt of {t} tokens does not fit the context of {self.n_ctx_per_seq}")
        self._L.llama_memory_clear(self._mem, True)
        # sequence-major, in chunks of n_batch tokens (the prompt-processing batch)
        flat = [(int(ids[s, p]), p, s, p == t - 1) for s in range(bsz) for p in range(t)]
        last: dict[int, Any] = {}
        step = self._cap
        for c in range(0, len(flat), step):
            chunk = flat[c:c + step]
            self._run(*zip(*[(tok, p, s, w) for tok, p, s, w in chunk]))
            for i, (_, _, s, w) in enumerate(chunk):
                if w:
                    last[s] = self._logits([i])[0]
        return np.stack([last[s] for s in range(bsz)])

    def decode(self, tokens, pos: int) -> "Any":
        """One token per sequence at position ``pos`` (the cache beyond it is dropped first); logits ``[B,V]``."""
        np = self._np
        tok = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if pos >= self.n_ctx_per_seq:
            raise ValueError(f"position {pos} is beyond the context of {self.n_ctx_per_seq}")
        self.rewind(pos)
        self._run(tok, [pos] * len(tok), range(len(tok)), [True] * len(tok))
        return self._logits(range(len(tok)))

    def close(self) -> None:
        L = self._L
        if getattr(self, "_batch", None) is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if getattr(self, "_ctx", None):
            L.llama_free(self._ctx)
            self._ctx = None
        if getattr(self, "_model", None):
            L.llama_model_free(self._model)
            self._model = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class LlamaCppRuntime(Runtime):
    """A GGUF engine behind the generic runtime contract: ``input_ids[B,T] -> next-token logits[B,V]`` (prefill)."""

    def __init__(self, engine: LlamaCppEngine):
        self.engine = engine

    def bind(self, inputs):
        ids = next(iter(inputs.values()))
        return lambda: self.engine.prefill(ids)

    def infer(self, inputs):
        return [self.engine.prefill(next(iter(inputs.values())))]

    def close(self) -> None:
        self.engine.close()


class LlamaCpp(Backend):
    name = "llamacpp"
    modules = ("llama_cpp", "gguf")
    distributions = {"llama_cpp": "llama-cpp-python"}
    pip_extra = "llamacpp"
    install_hint = "CMAKE_ARGS='-DGGML_NATIVE=ON' pip install 'planner[llamacpp]'  (builds llama.cpp: cmake, a C++ compiler)"
    devices = ("cpu",)
    input_format = "torch"
    quant_schemes = ("none", "fp16", "int8_weight_only", "int4_weight_only")
    scheme_options = {"int4_weight_only": ()}  # GGUF blocks are fixed: group_size is not honoured (int4_type is)
    own_weight_formats = True  # GGUF block types (Q4_K_M's super-blocks): not comparable to another int4 quantizer
    engine_files = ("model.gguf",)
    decoder_schemes = quant_schemes
    decoder_only = True
    Options = LlamaCppOptions

    @classmethod
    def check(cls, cfg, target, model_format):
        why = super().check(cfg, target, model_format)
        if why:
            return why
        if cfg.prune.active or cfg.distill.active:
            return "llamacpp runs the model's GGUF file as it is: pruning and distillation are not applied"
        return None

    @classmethod
    def load_artifact(cls, engine_dir: Path, batch: int, device: str) -> Runtime:
        import os

        # a context of 2048 positions per sequence, every core (the trial's own threads are in its manifest)
        return LlamaCppRuntime(LlamaCppEngine(Path(engine_dir) / "model.gguf", batch, 2048, os.cpu_count() or 1))

    def compile(self, source, cfg, target, workdir: Path) -> BuildResult:
        raise CandidateFailed(FailReason.UNSUPPORTED, "llamacpp runs LLM decoders only: give a workload "
                                                      "(planner optimize --workload FILE)")


def build_engine(module, cfg, target, workdir: Path, cache_dir: Path, n_ctx_per_seq: int) -> tuple[LlamaCppEngine, list[Path], dict]:
    """The GGUF of ``cfg`` for a decoder loaded from a GGUF file, written into ``workdir`` and loaded."""
    src = source_gguf(module)
    if src is None:
        raise CandidateFailed(FailReason.UNSUPPORTED, "llamacpp needs a model loaded from a GGUF file (the zoo's "
                                                      "smollm2-135m); this model has none (planner_gguf)")
    opts = LlamaCpp.resolve_options(cfg.options())
    threads = opts["threads"] or target.thread_count()
    gtype = gguf_type(cfg.quant.scheme, opts)
    t0 = time.perf_counter()
    cached, hit = cached_gguf(src, gtype, threads, cache_dir)
    out = Path(workdir) / "model.gguf"
    try:
        out.unlink(missing_ok=True)
        out.hardlink_to(cached)
    except OSError:
        shutil.copyfile(cached, out)
    write_s = time.perf_counter() - t0
    engine = LlamaCppEngine(out, cfg.batch_size, n_ctx_per_seq, threads, opts["n_batch"])
    info = {"gguf_type": gtype, "gguf_source": src.name, "gguf_cached": hit, "gguf_write_seconds": write_s,
            "threads": threads, "n_batch": engine.n_batch, "gguf_mb": out.stat().st_size / 2**20}
    return engine, [out], info
