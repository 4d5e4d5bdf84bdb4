"""Test models exercising failure paths through real code (no mocks)."""

import ctypes

import torch


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(x)


def tiny():
    torch.manual_seed(0)
    return Tiny().eval()


def tiny_hidden():
    """16 -> 64 -> 4 (the input `tests/data/evaluators.py` feeds): a hidden layer that channel pruning narrows."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4)).eval()


def example_inputs(batch_size):
    return (torch.randn(batch_size, 16),)


class DataDependent(Tiny):
    """Runs in eager mode, but data-dependent control flow makes ONNX export (compile) fail."""

    def forward(self, x):
        y = self.fc(x)
        if float(y.sum()) > 0:
            return y * 2
        return y


def data_dependent():
    torch.manual_seed(0)
    return DataDependent().eval()


class SegfaultOnBatch4(Tiny):
    """Kills its process (segmentation fault) when run with batch 4."""

    def forward(self, x):
        if x.shape[0] == 4:
            ctypes.string_at(0)
        return self.fc(x)


def segfault_on_batch4():
    torch.manual_seed(0)
    return SegfaultOnBatch4().eval()


def raises():
    raise RuntimeError("weights file is corrupt")


def not_a_module():
    return 42


class KilledOnBatch4(Tiny):
    """Gets SIGKILLed at batch 4, as the kernel's OOM killer does to a process that exhausts memory."""

    def forward(self, x):
        if x.shape[0] == 4:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        return self.fc(x)


def killed_on_batch4():
    torch.manual_seed(0)
    return KilledOnBatch4().eval()


class HangOnBatch4(Tiny):
    """Never returns at batch 4 (a hung candidate)."""

    def forward(self, x):
        if x.shape[0] == 4:
            import time

            time.sleep(3600)
        return self.fc(x)


def hang_on_batch4():
    torch.manual_seed(0)
    return HangOnBatch4().eval()


class TinyConv(torch.nn.Module):
    """A conv net on 3x8x8 images (pass its inputs explicitly: ``x:3x8x8``), for memory-format tests."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def tiny_conv():
    torch.manual_seed(0)
    return TinyConv().eval()


class AbortAboveBatch1(Tiny):
    """Aborts its process (SIGABRT) at any batch larger than 1, as some exported or stateful models do."""

    def forward(self, x):
        if x.shape[0] > 1:
            import os

            os.abort()
        return self.fc(x)


def abort_above_batch1():
    torch.manual_seed(0)
    return AbortAboveBatch1().eval()


class HangAboveBatch2(Tiny):
    """Never returns at any batch larger than 2 (its forward sleeps forever there)."""

    def forward(self, x):
        if x.shape[0] > 2:
            import time

            time.sleep(3600)
        return super().forward(x)


def hang_above_batch2():
    torch.manual_seed(0)
    return HangAboveBatch2().eval()


class HfStyleAttention(torch.nn.Module):
    """Self-attention named as Hugging Face names it (``num_attention_heads``, ``attention_head_size``): planner's
    head pruning does not recognise it, and channel pruning cuts across its heads (a ViT-like patch encoder)."""

    def __init__(self, hidden=32, heads=4):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, hidden // heads
        self.query, self.key, self.value = (torch.nn.Linear(hidden, hidden) for _ in range(3))
        self.dense = torch.nn.Linear(hidden, hidden)

    def forward(self, x):
        b, s, _ = x.shape

        def split(t):
            return t.view(b, s, self.num_attention_heads, self.attention_head_size).transpose(1, 2)

        y = torch.nn.functional.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)))
        return self.dense(y.transpose(1, 2).reshape(b, s, -1))


class HfStyleVit(torch.nn.Module):
    """Patches of a 3x8x8 image (pass ``x:3x8x8``), one attention block, a classifier."""

    def __init__(self):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, 32, 4, stride=4)
        self.attention = HfStyleAttention()
        self.head = torch.nn.Linear(32, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        return self.head((t + self.attention(t)).mean(1))


def hf_style_vit():
    torch.manual_seed(0)
    return HfStyleVit().eval()
