"""DCGAN-style generator for any power-of-two image size from 8 to 256 and any channel count.

The paper uses "a standard off-the-shelf DCGAN architecture" (Radford et al.): a 4×4 projection of the
input, then stride-2 transposed convolutions that double the size, BatchNorm and ReLU between them.
The last layer ends in a sigmoid so outputs are in the library's [0, 1] image range.
"""
from __future__ import annotations

import math

import torch
from torch import nn

MIN_SIZE, MAX_SIZE = 8, 256


def dcgan_init(module: nn.Module) -> None:
    """DCGAN initialisation (Radford et al.) of every (transposed) convolution and BatchNorm in ``module``:
    conv weights N(0, 0.02), zero biases, BatchNorm scale N(1, 0.02), shift 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class DCGANGenerator(nn.Module):
    """DCGAN generator.

    Channel widths halve at every doubling of the resolution, from ``base_width * 2**(n-1)`` (capped
    at ``max_width``) after the 4×4 projection down to ``base_width`` before the output layer, where
    ``n = log2(image_size / 4)`` is the number of upsampling layers. With ``image_size=32`` and
    ``base_width=64``: 256→128→64→3 channels at 4→8→16→32 px; with ``image_size=64``, the classic DCGAN
    of Radford et al. (512→256→128→64→3 at 4→8→16→32→64 px). ``base_width=128`` gives the 32 px
    generator the 512→256→128 widths.

    Args:
        in_dim: length of the input vector (code dimension plus any concatenated noise).
        image_size: output height and width; a power of two in [8, 256].
        channels: output channels (1 for grayscale, 3 for RGB, or any other count).
        base_width: channels before the output layer.
        max_width: cap on the channel count of the widest layer.

    Shape:
        input (B, in_dim) -> output (B, channels, image_size, image_size), values in [0, 1].
    """

    def __init__(
        self,
        in_dim: int,
        image_size: int = 32,
        channels: int = 3,
        base_width: int = 64,
        max_width: int = 512,
    ) -> None:
        super().__init__()
        check_image_size(image_size)
        if in_dim < 1 or channels < 1 or base_width < 1 or max_width < base_width:
            raise ValueError(
                f"DCGANGenerator needs in_dim >= 1, channels >= 1 and 1 <= base_width <= max_width; "
                f"got in_dim={in_dim}, channels={channels}, base_width={base_width}, max_width={max_width}"
            )
        self.in_dim = in_dim
        self.image_shape = (channels, image_size, image_size)
        n_up = int(math.log2(image_size // 4))
        widths = [min(base_width * 2 ** (n_up - 1 - k), max_width) for k in range(n_up)]
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, widths[0], 4, 1, 0, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DCGAN initialisation (:func:`dcgan_init`)."""
        dcgan_init(self)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Generate images.

        Args:
            inputs: generator inputs.

        Returns:
            Images in [0, 1].

        Shape:
            inputs (B, in_dim) -> (B, C, H, W)
        """
        if inputs.dim() != 2 or inputs.shape[1] != self.in_dim:
            raise ValueError(f"generator expects inputs of shape (B, {self.in_dim}); got {tuple(inputs.shape)}")
        return self.net(inputs[:, :, None, None])


def check_image_size(image_size: int) -> None:
    """Raise a clear error unless ``image_size`` is a power of two in [8, 256]."""
    if not isinstance(image_size, int) or image_size < MIN_SIZE or image_size > MAX_SIZE or image_size & (image_size - 1):
        hint = ""
        if isinstance(image_size, int) and image_size > 0:
            nearest = min(max(1 << (image_size - 1).bit_length(), MIN_SIZE), MAX_SIZE)
            hint = f" (on the command line: --image-size {nearest})"
        raise ValueError(
            f"DCGAN generators produce square images whose side is a power of two from {MIN_SIZE} to {MAX_SIZE} "
            f"(8, 16, 32, 64, 128, 256); got {image_size!r}. Resize your images to one of these sizes{hint}."
        )
