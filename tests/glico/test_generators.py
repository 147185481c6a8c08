import pytest
import torch

from glico.generators import DCGANGenerator


@pytest.mark.parametrize("size", [8, 16, 32, 64, 128, 256])
@pytest.mark.parametrize("channels", [1, 3, 5])
def test_dcgan_shapes_and_range(size, channels, gen):
    g = DCGANGenerator(40, image_size=size, channels=channels, base_width=8 if size > 64 else 16).eval()
    out = g(torch.randn(2, 40, generator=gen))
    assert out.shape == (2, channels, size, size)
    assert out.min() >= 0 and out.max() <= 1
    assert g.image_shape == (channels, size, size) and g.in_dim == 40


@pytest.mark.parametrize("size", [4, 12, 512, 33])
def test_dcgan_rejects_sizes_it_cannot_make(size):
    with pytest.raises(ValueError, match="power of two from 8 to 256"):
        DCGANGenerator(10, image_size=size)


def test_dcgan_rejects_wrong_input_width(gen):
    g = DCGANGenerator(10, image_size=8, channels=1)
    with pytest.raises(ValueError, match=r"\(B, 10\)"):
        g(torch.randn(3, 11, generator=gen))


def test_dcgan_cifar_instance_matches_classic_widths():
    g = DCGANGenerator(160, image_size=32, channels=3, base_width=64)
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [256, 128, 64, 3]
    assert [c.stride[0] for c in convs] == [1, 2, 2, 2]


@pytest.mark.parametrize("size,base_width,widths", [
    (64, 64, [512, 256, 128, 64, 3]),   # Radford et al.'s 64 px DCGAN
    (32, 128, [512, 256, 128, 3]),      # the 32 px generator with those widths
])
def test_dcgan_widths_are_the_ones_the_docstring_names(size, base_width, widths):
    g = DCGANGenerator(160, image_size=size, channels=3, base_width=base_width)
    assert [m.out_channels for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == widths
