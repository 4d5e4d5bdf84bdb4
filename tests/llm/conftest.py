"""Shared fixtures of the LLM tests: the tiny decoder, its ModelSource, a fast target."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from llm_helpers import DATA, TINY_REF  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Like the fast-cpu target (threads: 1): no OpenMP oversubscription on a shared machine."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny():
    from planner.zoo.gpt import build_tiny

    return build_tiny(0)


@pytest.fixture(scope="session")
def tiny_spec():
    from planner.model import ModelSpec

    return ModelSpec(TINY_REF, "file", "tiny_gpt")


@pytest.fixture(scope="session")
def llm_cache(tmp_path_factory):
    """One planner cache for the session: the ONNX export of the tiny decoder happens once."""
    return tmp_path_factory.mktemp("llm-cache")


@pytest.fixture(scope="session")
def cpu_target():
    from planner.target import load_target

    return load_target(DATA / "fast-cpu.yaml")
