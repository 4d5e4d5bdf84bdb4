"""``resnet18``: the standard ResNet-18 (He et al. 2015; torchvision layout), without torchvision.

BasicBlock x [2, 2, 2, 2], widths 64-128-256-512, 7x7/2 stem conv + 3x3/2 max-pool,
global average pool and a 1000-way ``fc``: 11,689,512 parameters, same module names as
torchvision (``conv1``, ``bn1``, ``layer1.0.conv1``, ``layer2.0.downsample.0``, ``fc``, ...).

Weights are random but not degenerate: convolutions use torchvision's Kaiming init, the
BatchNorm affine parameters are seeded random (weight ~ U(0.5, 1.5), bias ~ N(0, 0.1)) and
the running statistics are measured on a seeded batch of 4 N(0,1) images (as a trained
network's would be); ``fc`` has zero-mean random rows and a bias that cancels the mean pooled
feature.  Without this a random-init ResNet gives the same class for ~all inputs (the
input-independent part of the logits dwarfs the input-dependent part); with it, 16 N(0,1)
inputs get 16 different classes.  ``build`` takes ~0.5 s on 2 CPU cores.
"""

from __future__ import annotations

import torch
from torch import nn

from planner.model import InputSpec

INPUTS: tuple[InputSpec, ...] = (InputSpec("x", (3, 224, 224), "float32"),)
OUTPUT_KIND = "logits"


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, cout: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (2, 2, 2, 2), num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * BasicBlock.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        mods = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        mods += [BasicBlock(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


# Logit scale: pooled features deviate from their mean by ~0.14 per channel for N(0,1) inputs,
# so a unit-norm ``fc`` row of this length gives input-dependent logits with std ~2.
_FC_ROW_NORM = 16.0
_CALIB_BATCH = 4  # N(0,1) images; ~0.3 s on 2 cores


@torch.no_grad()
def _init(model: ResNet, g: torch.Generator) -> None:
    bns = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):  # torchvision's init
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=g)
        elif isinstance(m, nn.BatchNorm2d):  # random affine part, so BN folding is not a no-op
            m.weight.copy_(torch.empty(m.num_features).uniform_(0.5, 1.5, generator=g))
            m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            bns.append(m)
    w = torch.randn(model.fc.weight.shape, generator=g)
    w -= w.mean(dim=1, keepdim=True)
    model.fc.weight.copy_(w / w.norm(dim=1, keepdim=True) * _FC_ROW_NORM)

    # Running statistics: measured on a small seeded batch of N(0,1) images, as a trained
    # network's would be (BN then really normalizes).  With unit/zero statistics instead the
    # activations drift with depth and the pooled features are dominated by a per-channel
    # constant, so every input gets the same class.  The same pass gives the mean pooled
    # feature; ``fc.bias`` cancels its contribution, leaving zero-mean logits.
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: after one batch, running stats = batch stats
    pooled = []
    hook = model.fc.register_forward_pre_hook(lambda _m, args: pooled.append(args[0]))
    model.train()
    try:
        model(torch.randn((_CALIB_BATCH, *INPUTS[0].shape), generator=g))
    finally:
        hook.remove()
        model.eval()
        for m in bns:
            m.momentum = 0.1
            m.num_batches_tracked.zero_()
    model.fc.bias.copy_(-model.fc.weight @ pooled[0].mean(0))


def build(seed: int = 0) -> nn.Module:
    """Deterministic for a given ``seed``; the global RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNet()
        _init(model, torch.Generator().manual_seed(seed))
    return model.eval()
