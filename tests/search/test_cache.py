import os
import threading

from planner.cache import ArtifactCache, cache_key


def _file(tmp_path, name, size):
    p = tmp_path / name
    p.write_bytes(os.urandom(size))
    return p


def test_put_get_roundtrip_and_key_stability(tmp_path):
    c = ArtifactCache(tmp_path / "c", max_bytes=10**9)
    k = cache_key("onnx", "abc", {"b": 1, "a": 2})
    assert k == cache_key("onnx", "abc", {"a": 2, "b": 1})
    assert c.get(k) is None
    src = _file(tmp_path, "m.onnx", 1000)
    entry = c.put(k, {"model.onnx": src})
    assert c.get(k) == entry and (entry / "model.onnx").read_bytes() == src.read_bytes()


def test_corrupt_entry_is_dropped(tmp_path):
    c = ArtifactCache(tmp_path / "c", max_bytes=10**9)
    entry = c.put("k1", {"model.onnx": _file(tmp_path, "m", 100)})
    with open(entry / "model.onnx", "r+b") as f:
        f.write(b"X")
    assert c.get("k1") is None and not entry.exists()


def test_lru_eviction_keeps_size_bound(tmp_path):
    c = ArtifactCache(tmp_path / "c", max_bytes=3300)  # three 1000-byte entries and their indexes fit, four do not
    for i in range(3):
        c.put(f"k{i}", {"f": _file(tmp_path, f"f{i}", 1000)})
        os.utime(c.root / f"k{i}" / c.INDEX, (1000 + i, 1000 + i))
    c.get("k0")  # k0 recently used: k1 is now the oldest
    c.put("k3", {"f": _file(tmp_path, "f3", 1000)})
    names = {p.name for p in c.root.iterdir()}
    assert "k1" not in names and {"k0", "k3"} <= names
    assert c.size() <= 3300


def test_concurrent_puts_of_one_key_leave_one_valid_entry(tmp_path):
    c = ArtifactCache(tmp_path / "c", max_bytes=10**9)
    src = _file(tmp_path, "m", 200_000)
    errors = []

    def put():
        try:
            c.put("same", {"model.onnx": src})
        except Exception as e:  # pragma: no cover - the test fails on any
            errors.append(e)

    threads = [threading.Thread(target=put) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors
    assert c.get("same") is not None
    assert [p.name for p in c.root.iterdir()] == ["same"]  # no temp folders left behind
