"""Compiler/runtime backends behind one narrow interface (see base.py).

To add a backend: write `planner/backends/<name>.py` with a `Backend` subclass
(heavy imports inside its methods), then add one line to `registry.REGISTRY`.
"""
