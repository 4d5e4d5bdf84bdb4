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
