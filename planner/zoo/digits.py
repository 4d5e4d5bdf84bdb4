"""``digits-cnn``: a small residual CNN trained on scikit-learn's bundled handwritten digits.

Data: ``sklearn.datasets.load_digits`` (1,797 8×8 grey images, 10 classes; ships with
scikit-learn, no download), pixel values 0..16 scaled to [0, 1], upsampled to 16×16
(bilinear) and standardised with the training split's mean/std.  Fixed stratified
70/30 train/test split (``random_state=0``): 1,257 training and 540 test images.

Network (56,554 parameters, ~3.6 M multiply-adds per image)::

    conv1 3x3 1->32   BN ReLU                 16x16
    conv2 3x3/2 32->64 BN ReLU                 8x8
    conv3 3x3 64->64  BN (+ conv2's output) ReLU   (residual)
    global average pool, fc 64->10 (logits)

``build(seed)`` returns the *trained* network (eval mode).  It is trained once, on one
thread with a fixed seed (6 epochs, ~10-15 s of CPU time), and its ``state_dict`` is cached under
``$PLANNER_ZOO_CACHE``, else ``$PLANNER_HOME/cache/zoo``, else
``$XDG_CACHE_HOME/planner/zoo`` (default ``~/.cache/planner/zoo``), keyed by a hash of the
training recipe (hyper-parameters and the source of the model, data and training code);
later builds load it with ``torch.load(weights_only=True)``.  Test accuracy 0.985 (seed 0).

``dataset()`` returns the held-out *test* split ``{"x": (540, 1, 16, 16) float32,
"labels": (540,) int64}``, so the planner's quality loss is the accuracy drop against the
fp32 eager model.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from planner.errors import ConfigError
from planner.model import InputSpec

SIZE = 16
INPUTS: tuple[InputSpec, ...] = (InputSpec("x", (1, SIZE, SIZE), "float32"),)
OUTPUT_KIND = "logits"
NAME = "digits-cnn"

# Everything that determines the trained weights (besides the code hashed in `recipe_key`).
RECIPE: dict[str, Any] = {
    "version": 1,
    "size": SIZE,
    "test_fraction": 0.3,
    "split_seed": 0,
    "epochs": 6,
    "batch": 32,
    "lr": 5e-3,
    "weight_decay": 1e-4,
    "max_shift": 1,  # random translation of the 8x8 image by up to this many pixels (augmentation)
    "train_threads": 1,
}


class DigitsCNN(nn.Module):
    def __init__(self, classes: int = 10, c1: int = 32, c2: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c2)
        self.conv3 = nn.Conv2d(c2, c2, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(c2)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c2, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.relu(x + self.bn3(self.conv3(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


# ------------------------------------------------------------------ data


def _raw_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test): 8x8 images in [0, 1], fixed stratified split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ConfigError(f"model {NAME}: needs scikit-learn (its bundled digits data set): pip install scikit-learn") from None
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=RECIPE["test_fraction"], random_state=RECIPE["split_seed"], stratify=y)
    return xtr, ytr, xte, yte


def _upsample(x: np.ndarray) -> torch.Tensor:
    return F.interpolate(torch.from_numpy(np.ascontiguousarray(x)), size=(SIZE, SIZE), mode="bilinear", align_corners=False)


def _stats(xtr: np.ndarray) -> tuple[float, float]:
    t = _upsample(xtr)
    return float(t.mean()), float(t.std())


def _prepare(x: np.ndarray, mean: float, std: float) -> torch.Tensor:
    return ((_upsample(x) - mean) / std).float().contiguous()


def _splits() -> dict[str, Any]:
    xtr, ytr, xte, yte = _raw_split()
    mean, std = _stats(xtr)
    return {"x_train_raw": xtr, "y_train": ytr, "x_test": _prepare(xte, mean, std), "y_test": yte, "mean": mean, "std": std}


def dataset() -> dict[str, np.ndarray]:
    """The held-out test split: {"x": (540, 1, 16, 16) float32, "labels": (540,) int64}."""
    s = _splits()
    return {"x": s["x_test"].numpy(), "labels": s["y_test"]}


def calibration_dataset() -> dict[str, np.ndarray]:
    """The training split, for int8 calibration and distillation: {"x": (1257, 1, 16, 16) float32}.
    Kept apart from `dataset()`, so the digits that tune a compressed model never judge it."""
    s = _splits()
    mean, std = s["mean"], s["std"]
    return {"x": _prepare(s["x_train_raw"], mean, std).numpy()}


# ------------------------------------------------------------------ training


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Translate each 8x8 image by a random (dy, dx) in [-max_shift, max_shift], zero fill."""
    if max_shift <= 0:
        return x
    n = x.shape[0]
    p = max_shift
    padded = F.pad(x, (p, p, p, p))
    off = torch.randint(0, 2 * p + 1, (n, 2), generator=g)
    h, w = x.shape[-2:]
    return torch.stack([padded[i, :, off[i, 0]:off[i, 0] + h, off[i, 1]:off[i, 1] + w] for i in range(n)])


def _train(seed: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    s = _splits()
    mean, std = s["mean"], s["std"]
    xtr8 = torch.from_numpy(s["x_train_raw"])
    ytr = torch.from_numpy(s["y_train"])
    r = RECIPE
    threads = torch.get_num_threads()
    torch.set_num_threads(r["train_threads"])  # same float reduction order on every host
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            g = torch.Generator().manual_seed(seed)
            model = DigitsCNN()
            opt = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
            steps_per_epoch = (len(xtr8) + r["batch"] - 1) // r["batch"]
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["lr"], total_steps=r["epochs"] * steps_per_epoch)
            model.train()
            for _ in range(r["epochs"]):
                perm = torch.randperm(len(xtr8), generator=g)
                for i in range(0, len(perm), r["batch"]):
                    idx = perm[i:i + r["batch"]]
                    xb = _prepare(_shift(xtr8[idx], g, r["max_shift"]).numpy(), mean, std)
                    loss = F.cross_entropy(model(xb), ytr[idx])
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
            model.eval()
            with torch.no_grad():
                acc = float((model(s["x_test"]).argmax(1).numpy() == s["y_test"]).mean())
    finally:
        torch.set_num_threads(threads)
    return model.state_dict(), {"test_accuracy": acc}


# ------------------------------------------------------------------ cache


def cache_dir() -> Path:
    if os.environ.get("PLANNER_ZOO_CACHE"):
        return Path(os.environ["PLANNER_ZOO_CACHE"])
    if os.environ.get("PLANNER_HOME"):
        return Path(os.environ["PLANNER_HOME"]) / "cache" / "zoo"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "planner" / "zoo"


def recipe_key(seed: int = 0) -> str:
    """Hash of everything that determines the trained weights: recipe, seed, and the code that trains."""
    h = hashlib.sha256(json.dumps({**RECIPE, "seed": int(seed)}, sort_keys=True).encode())
    for obj in (DigitsCNN, _raw_split, _upsample, _stats, _prepare, _splits, _shift, _train):
        h.update(inspect.getsource(obj).encode())
    h.update(torch.__version__.split("+")[0].encode())
    return h.hexdigest()[:16]


def weights_path(seed: int = 0, directory: Path | None = None) -> Path:
    return Path(directory or cache_dir()) / f"{NAME}-seed{int(seed)}-{recipe_key(seed)}.pt"


def build(seed: int = 0, cache: Path | None = None) -> nn.Module:
    """The trained network (eval mode): loaded from the cache, else trained (seconds) and cached.

    Deterministic for a given ``seed``; the global RNG state and thread count are left as they were."""
    path = weights_path(seed, cache)
    with torch.random.fork_rng(devices=[]):
        model = DigitsCNN()  # its random init is overwritten; it must not move the global RNG
    state = None
    if path.is_file():
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
            state = blob["state_dict"]
            model.load_state_dict(state)
        except Exception:  # a corrupt or foreign file: retrain and overwrite
            state = None
    if state is None:
        state, meta = _train(seed)
        model.load_state_dict(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save({"state_dict": state, "meta": {**meta, "recipe": json.dumps(RECIPE, sort_keys=True), "seed": int(seed)}}, tmp)
        os.replace(tmp, path)  # atomic: concurrent workers never read half a file
    return model.eval()


def meta(seed: int = 0, cache: Path | None = None) -> dict[str, Any]:
    """What was recorded when the cached weights were trained (test accuracy, recipe); builds them if needed."""
    path = weights_path(seed, cache)
    if not path.is_file():
        build(seed, cache)
    return dict(torch.load(path, map_location="cpu", weights_only=True)["meta"])
