"""Model transforms, one technique per module: prune, quantize, distill.

Each module exposes a function taking a frozen config; `schemes` is the light
capability table (no heavy imports) that sampling uses to avoid infeasible
combinations.
"""
