"""int4 weight-only ``nn.Linear`` layers for torch on CPU.

Weights are quantized per group of ``group_size`` input channels to 4 bits, asymmetric
(min/max per group: ``w ~= (q - 8) * scale + zero``), and packed for torch's own CPU int4
kernel (``aten._weight_int4pack_mm_for_cpu``, the "tinygemm" layout).  The kernel computes
in bfloat16, so each layer casts its input to bf16 and its output back: weights take 1/8 of
fp32's bytes, which is what bounds a decode step of an LLM (one pass over every weight per
token).  Measured on this 2-core AVX2 host, a [4, 512] x [512, 2048] product: int4/bf16
180 us against fp32 dense 329 us and bf16 dense 584 us (the fp32-activation variant of the
kernel is ~10x slower, hence bf16).  For many rows at once (a prompt's prefill) the int4 kernel
loses to a float GEMM, so layers switch to dequantize-then-GEMM above `KERNEL_MAX_ROWS` rows (see
`Int4WeightOnlyLinear`): decode gets the int4 kernel, prefill the float one.

The kernel's shape rules are checked per layer: ``group_size`` in {32, 64, 128, 256}, input
features divisible by the group size, output features divisible by 16.  Layers that break
them stay in float and are counted in the result (`quantize_int4` returns both counts), so a
model that would be left untouched fails as unsupported instead of passing as int4.

torchao's ``Int4WeightOnlyConfig`` was tried first: in torchao 0.18 its CPU paths need the
``mslk`` kernels (not on PyPI for CPU) or bf16 models (tile-packed format).  CUDA is not
implemented here (no GPU to validate it): the scheme is declared for CPU targets only.
"""

from __future__ import annotations

import torch
from torch import nn

from planner.schemes import INT4_GROUP_SIZES as GROUP_SIZES
N_MULTIPLE = 16  # output features must be a multiple of this (kernel packing)
INNER_K_TILES = 2
KERNEL_MAX_ROWS = 16  # above this many rows (tokens x sequences) the layer dequantizes and runs a float GEMM


def _quantize_groups(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(q int32 [N,K] in 0..15, scales_and_zeros [K/group, N, 2]) of a float weight [N, K]."""
    n, k = w.shape
    g = w.detach().float().reshape(-1, group_size)
    hi, lo = g.amax(1, keepdim=True), g.amin(1, keepdim=True)
    scale = (hi - lo).clamp(min=1e-6) / 15
    zero = lo + scale * 8
    q = g.sub(lo).div(scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    sz = torch.cat([scale.view(n, -1, 1), zero.view(n, -1, 1)], 2).transpose(0, 1).contiguous()
    return q, sz


def fits(linear: nn.Linear, group_size: int) -> bool:
    return linear.in_features % group_size == 0 and linear.out_features % N_MULTIPLE == 0


class Int4WeightOnlyLinear(nn.Module):
    """``y = x @ dequant(W)^T + b`` with W packed as int4 (see the module docstring).

    Up to `KERNEL_MAX_ROWS` rows (decode steps, small batches) run torch's int4 kernel.  Above it
    (a prefill of a whole prompt) that kernel is slower than a float GEMM -- measured on gpt-mini,
    torch.compile, batch 1: TTFT p99 370 ms int4 against 212 ms fp32, while TPOT fell from 21.5 to
    14.1 ms -- so W is dequantized from its nibbles and multiplied in fp32.  Under torch.compile
    with freezing, Inductor folds that dequantization into a constant of the prefill graph (float
    weights for prefill, int4 for decode)."""

    def __init__(self, linear: nn.Linear, group_size: int):
        super().__init__()
        self.in_features, self.out_features, self.group_size = linear.in_features, linear.out_features, group_size
        q, sz = _quantize_groups(linear.weight, group_size)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, INNER_K_TILES))
        self.register_buffer("nibbles", (q[:, ::2] | (q[:, 1::2] << 4)).to(torch.uint8))  # [N, K/2], for large M
        self.register_buffer("scales_and_zeros", sz.to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def dequantized(self) -> torch.Tensor:
        """The float weight [N, K] the int4 kernel multiplies by."""
        q = torch.stack([self.nibbles & 15, self.nibbles >> 4], dim=-1).reshape(self.out_features, self.in_features)
        sz = self.scales_and_zeros.float().transpose(0, 1).repeat_interleave(self.group_size, dim=1)  # [N, K, 2]
        return (q.float() - 8) * sz[..., 0] + sz[..., 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] > KERNEL_MAX_ROWS:
            bias = None if self.bias is None else self.bias.float()
            y = torch.nn.functional.linear(x2.float(), self.dequantized(), bias)
        else:
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2.to(torch.bfloat16), self.packed, self.group_size,
                                                           self.scales_and_zeros)
            if self.bias is not None:
                y = y + self.bias
        return y.to(x.dtype).reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


def quantize_int4(module: nn.Module, group_size: int = 128) -> tuple[int, int]:
    """Replace every fitting ``nn.Linear`` of ``module`` in place; (replaced, left in float)."""
    if group_size not in GROUP_SIZES:
        raise ValueError(f"group_size {group_size}: the int4 CPU kernel takes {sorted(GROUP_SIZES)}")
    done = kept = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            if fits(child, group_size):
                setattr(parent, name, Int4WeightOnlyLinear(child, group_size))
                done += 1
            else:
                kept += 1
    return done, kept
