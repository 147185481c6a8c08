"""The paper's weak classifier f: a small CNN with four convolutional layers."""
from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from .base import check_classifier_input


def _side(image_size: int | tuple[int, int]) -> int:
    if isinstance(image_size, int):
        sides = (image_size, image_size)
    else:
        sides = tuple(image_size)
    if len(sides) != 2 or not all(isinstance(s, int) and s >= 1 for s in sides):
        raise ValueError(f"image_size must be a positive int or a pair (H, W) of them; got {image_size!r}")
    return min(sides)


class WeakCNN(nn.Module):
    """The weak 4-conv classifier of GLICO (the paper's default f), also the fast downstream option.

    Four 3×3 convolutions of widths ``width``, ``2·width``, ``4·width``, ``8·width``, each followed by
    (optional) BatchNorm and a LeakyReLU; stride 2 while the feature map is at least 4 pixels on its
    short side (so 32 px → 16 → 8 → 4 → 2, 8 px → 4 → 2 → 2 → 2), then a global average pool and a
    linear layer. It returns raw logits.

    Unlike the public reference code, the activation is a real nonlinearity (the reference used the
    identity, which makes the network a linear map) and no softmax is applied (the reference applied it
    twice before the cross-entropy).

    The global pool means any input size works; ``image_size`` only decides where the strides go.

    Args:
        in_channels: channels of the input images (1 for grey, 3 for RGB, any other count).
        num_classes: number of classes.
        image_size: side of the square input images, or (H, W); the strides are chosen from it.
        width: channels of the first convolution (the others are 2×, 4×, 8× this).
        batch_norm: put a BatchNorm2d after each convolution.
        negative_slope: slope of the LeakyReLU for negative inputs (0 gives a ReLU).

    Shape:
        x: (B, in_channels, H, W) images with values in [0, 1].
        output: (B, num_classes) logits.
    """

    consumes_codes: ClassVar[bool] = False

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | tuple[int, int],
        width: int = 32,
        *,
        batch_norm: bool = True,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1 or width < 1:
            raise ValueError(
                f"in_channels, num_classes and width must be >= 1; got {in_channels}, {num_classes}, {width}"
            )
        if negative_slope < 0:
            raise ValueError(f"negative_slope must be >= 0; got {negative_slope}")
        side = _side(image_size)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.image_size = image_size
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(4):
            c_out = width * 2**i
            stride = 2 if side >= 4 else 1
            side = (side + 1) // 2 if stride == 2 else side
            # BatchNorm makes the conv bias redundant.
            layers.append(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.LeakyReLU(negative_slope))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images.

        Args:
            x: images (B, in_channels, H, W) with values in [0, 1].

        Returns:
            logits (B, num_classes).
        """
        check_classifier_input(x, self.in_channels, "WeakCNN")
        return self.head(self.pool(self.features(x)).flatten(1))
