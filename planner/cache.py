"""Content-addressed on-disk cache helpers: atomic writes safe for concurrent workers."""

from __future__ import annotations

import contextlib
import hashlib
import os
import uuid
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temp path beside ``final``; rename it into place only if the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def cache_key(*parts) -> str:
    """Stable content key from JSON-able parts (model hash, configs, target, library versions)."""
    import json

    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


class ArtifactCache:
    """Content-addressed, size-bounded store of build products (ONNX exports, quantized models, ...).

    Each entry is a folder ``<root>/<key>/`` with its files and ``INDEX.json`` (sha256 of each
    file).  Entries are written to a temp folder and renamed into place, so concurrent workers
    never see half an entry; the loser of a race discards its copy.  Reuse re-checks every
    sha256 and drops a corrupt entry.  Least recently used entries are evicted above ``max_bytes``.
    """

    INDEX = "INDEX.json"

    def __init__(self, root: Path, max_bytes: int | None = None):
        self.root = Path(root)
        if max_bytes is None:
            max_bytes = int(float(os.environ.get("PLANNER_CACHE_MAX_GB", "20")) * 2**30)
        self.max_bytes = max_bytes

    def get(self, key: str) -> Path | None:
        import json

        entry = self.root / key
        index = entry / self.INDEX
        if not index.is_file():
            return None
        try:
            files = json.loads(index.read_text())
            if all(sha256_file(entry / name) == digest for name, digest in files.items()):
                os.utime(index)  # recently used
                return entry
        except (OSError, ValueError):
            pass
        self._drop(entry)  # corrupt or partial: rebuild
        return None

    def put(self, key: str, files: dict[str, Path]) -> Path:
        """Copy (or move, for files inside a scratch dir) ``files`` into the entry ``key``; return its folder."""
        import json
        import shutil

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / key
        tmp = self.root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
        tmp.mkdir()
        try:
            index = {}
            for name, src in files.items():
                if "/" in name or name.startswith(".") or name == self.INDEX:
                    raise ValueError(f"bad cache file name {name!r}")
                shutil.copyfile(src, tmp / name)
                index[name] = sha256_file(tmp / name)
            (tmp / self.INDEX).write_text(json.dumps(index, indent=1))
            try:
                os.rename(tmp, final)
            except OSError:  # another worker published the same key first: keep theirs
                if self.get(key) is None:
                    self._drop(final)
                    os.rename(tmp, final)
        finally:
            if tmp.exists():
                self._drop(tmp)
        self.evict()
        return final

    def size(self) -> int:
        total = 0
        for f in self.root.rglob("*") if self.root.is_dir() else ():
            try:
                total += f.stat().st_size if f.is_file() else 0
            except FileNotFoundError:
                continue
        return total

    def evict(self) -> list[str]:
        """Delete least recently used entries until the cache fits ``max_bytes``."""
        if not self.root.is_dir():
            return []
        entries = []
        for e in self.root.iterdir():
            if e.name.startswith("."):  # another worker's entry being written
                continue
            try:
                idx = e / self.INDEX
                size = sum(f.stat().st_size for f in e.iterdir() if f.is_file())
                entries.append((idx.stat().st_mtime, size, e))
            except (FileNotFoundError, NotADirectoryError):  # evicted or replaced concurrently
                continue
        total = sum(s for _, s, _ in entries)
        evicted = []
        for _, size, e in sorted(entries, key=lambda x: x[0]):
            if total <= self.max_bytes:
                break
            self._drop(e)
            total -= size
            evicted.append(e.name)
        return evicted

    @staticmethod
    def _drop(path: Path) -> None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
