"""WideResNet-depth-k (CIFAR variant), written from Zagoruyko & Komodakis, "Wide Residual Networks" (2016)."""
from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from .base import check_classifier_input


class _PreActBlock(nn.Module):
    """Pre-activation basic block: BN-ReLU-conv3×3(stride)-BN-ReLU-dropout-conv3×3, plus the shortcut.

    When the width or resolution changes, the shortcut is a 1×1 convolution of the pre-activated input
    (as in the paper's code); otherwise it is the identity on the raw input.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.dropout = dropout
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if (c_in != c_out or stride != 1) else None
        )

    def forward(self, x: Tensor) -> Tensor:
        o = F.relu(self.bn1(x))
        y = self.conv1(o)
        y = F.relu(self.bn2(y))
        if self.dropout > 0:
            y = F.dropout(y, p=self.dropout, training=self.training)
        y = self.conv2(y)
        return y + (x if self.shortcut is None else self.shortcut(o))


class WideResNet(nn.Module):
    """WideResNet-depth-k for small images (the paper's downstream classifier for CIFAR: WRN-28-10).

    A 3×3 stem convolution to 16 channels, then three groups of ``(depth − 4) / 6`` pre-activation basic
    blocks of widths 16k, 32k, 64k with strides 1, 2, 2, then BN-ReLU, a global (adaptive) average pool
    and a linear layer. The adaptive pool makes it work for 32×32 images and for smaller ones such as
    8×8 digits (feature maps 8 → 4 → 2). WRN-28-10 for 10 classes has about 36.5 M parameters.

    Args:
        depth: total depth; ``(depth − 4)`` must be a positive multiple of 6 (10, 16, 22, 28, 40, ...).
        widen_factor: k, the width multiplier (10 for WRN-28-10; small values give fast test models).
        num_classes: number of classes.
        in_channels: channels of the input images.
        dropout: dropout probability between the two convolutions of each block (the paper uses 0.3
            for some settings; 0 disables it).

    Shape:
        x: (B, in_channels, H, W) images with values in [0, 1].
        output: (B, num_classes) logits.
    """

    consumes_codes: ClassVar[bool] = False

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        *,
        num_classes: int,
        in_channels: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(
                f"WideResNet depth must satisfy (depth - 4) % 6 == 0 with depth >= 10 "
                f"(e.g. 10, 16, 22, 28, 40); got depth={depth}"
            )
        if widen_factor < 1:
            raise ValueError(f"widen_factor must be >= 1; got {widen_factor}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError(f"num_classes and in_channels must be >= 1; got {num_classes}, {in_channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1); got {dropout}")
        self.depth = depth
        self.widen_factor = widen_factor
        self.num_classes = num_classes
        self.in_channels = in_channels
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c_in = widths[0]
        for c_out, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(_PreActBlock(c_in, c_out, stride if i == 0 else 1, dropout))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(c_in)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images.

        Args:
            x: images (B, in_channels, H, W) with values in [0, 1].

        Returns:
            logits (B, num_classes).
        """
        check_classifier_input(x, self.in_channels, "WideResNet")
        y = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.head(self.pool(y).flatten(1))
