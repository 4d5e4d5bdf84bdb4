"""The tiny gpt-mini configuration as a model file for `ModelSource` (``tests/llm/tiny_gpt.py:build``).

``planner.zoo.gpt.INPUTS`` describe the full-size model (vocab 32000); this file pairs the
tiny model with inputs in its own vocabulary, so pruning examples stay in range.
"""

from planner.zoo.gpt import OUTPUT_KIND, TINY_INPUTS, build_tiny  # noqa: F401

INPUTS = TINY_INPUTS


def build():
    return build_tiny(0)
