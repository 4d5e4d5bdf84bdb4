"""Helpers of the `gpu` suite (import as `from gpu_support import ...`)."""

import pytest


def cuda_reason() -> str | None:
    """None when torch sees a CUDA device, else why not."""
    try:
        import torch
    except ImportError as e:  # pragma: no cover - torch is a dependency
        return f"torch is not importable: {e}"
    if not torch.cuda.is_available():
        return (f"needs an NVIDIA GPU: torch.cuda.is_available() is False "
                f"(torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none (CPU wheel)'})")
    return None


def gpu_marks():
    reason = cuda_reason()
    return [pytest.mark.gpu, pytest.mark.skipif(reason is not None, reason=reason or "")]
