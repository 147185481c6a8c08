"""LaplacianPyramidLoss and PixelLoss against closed forms."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerances import tol

from glico.losses import LaplacianPyramidLoss, PixelLoss, laplacian_pyramid

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False, width=32)


def expected_levels(side: int, levels: int, min_size: int) -> int:
    """Level j (j >= 1) has side ceil(side / 2^j), which is >= min_size iff side > (min_size - 1) * 2^j."""
    extra = sum(1 for j in range(1, levels) if side > (min_size - 1) * 2**j)
    return 1 + extra


@settings(deadline=None, max_examples=60)
@given(
    h=st.integers(1, 40),
    w=st.integers(1, 40),
    c=st.integers(1, 4),
    b=st.integers(1, 3),
    a_val=unit,
    b_val=unit,
    levels=st.integers(1, 6),
    min_size=st.integers(1, 8),
)
def test_constant_images_only_differ_at_the_coarsest_level(h, w, c, b, a_val, b_val, levels, min_size):
    # Blurring, subsampling and bilinear upsampling keep a constant image constant, so every band-pass
    # level of a constant image is 0 and the low-pass residual (level L-1, weight 4^-(L-1)) holds the constant.
    pred = torch.full((b, c, h, w), a_val)
    target = torch.full((b, c, h, w), b_val)
    n = expected_levels(min(h, w), levels, min_size)
    expected = torch.full((b,), abs(a_val - b_val) * 4.0 ** -(n - 1))
    loss = LaplacianPyramidLoss(levels=levels, min_size=min_size)
    assert len(loss.prepare_target(target).levels) == n
    torch.testing.assert_close(loss(pred, target), expected, **tol(torch.float32))


@pytest.mark.parametrize("size, levels_used", [(8, 2), (7, 2), (5, 1), (1, 1), (32, 4), (64, 5), (256, 5)])
def test_level_count_with_defaults(size, levels_used):
    pred, target = torch.full((1, 3, size, size), 0.75), torch.full((1, 3, size, size), 0.25)
    loss = LaplacianPyramidLoss()
    assert len(loss.prepare_target(target).levels) == levels_used
    torch.testing.assert_close(loss(pred, target), torch.tensor([0.5 * 4.0 ** -(levels_used - 1)]))


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 5, 17, 10), (2, 1, 8, 8)])
def test_pyramid_collapses_back_to_the_image(gen, shape):
    image = torch.rand(shape, generator=gen)
    pyramid = laplacian_pyramid(image, 4 if min(shape[-2:]) >= 16 else 2).levels
    for j, level in enumerate(pyramid):
        assert level.shape[-2:] == tuple(-(-s // 2**j) for s in shape[-2:])  # ceil(s / 2^j)
    rebuilt = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        rebuilt = band + F.interpolate(rebuilt, size=band.shape[-2:], mode="bilinear", align_corners=False)
    torch.testing.assert_close(rebuilt, image, **tol(torch.float32))


def test_fine_detail_lands_in_the_finest_level():
    # A checkerboard is removed by the blur: the difference sits in the band-pass level 0 (weight 1) and
    # barely reaches coarser levels, so the loss is close to the plain L1 of the band-pass difference.
    target = torch.full((1, 1, 16, 16), 0.5)
    checker = (torch.arange(16).view(-1, 1) + torch.arange(16).view(1, -1)) % 2
    pred = target + 0.1 * (checker.float() - 0.5)
    loss = LaplacianPyramidLoss()
    fine = (laplacian_pyramid(pred, 3).levels[0] - laplacian_pyramid(target, 3).levels[0]).abs().mean()
    assert float(loss(pred, target)) >= float(fine) > 0.03


@pytest.mark.parametrize("kwargs", [dict(levels=0), dict(min_size=0), dict(levels=2.5)])
def test_laplacian_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        LaplacianPyramidLoss(**kwargs)


@settings(deadline=None, max_examples=40)
@given(a_val=unit, b_val=unit, c=st.integers(1, 5), h=st.integers(1, 9), w=st.integers(1, 9))
def test_pixel_loss_on_constants(a_val, b_val, c, h, w):
    pred, target = torch.full((2, c, h, w), a_val), torch.full((2, c, h, w), b_val)
    torch.testing.assert_close(PixelLoss(p=1)(pred, target), torch.full((2,), abs(a_val - b_val)))
    torch.testing.assert_close(PixelLoss(p=2)(pred, target), torch.full((2,), (a_val - b_val) ** 2))


def test_pixel_loss_per_sample(gen):
    pred, target = torch.rand(3, 2, 5, 7, generator=gen), torch.rand(3, 2, 5, 7, generator=gen)
    for p in (1, 2):
        expected = torch.stack(
            [((pred[i] - target[i]).abs() ** p).sum() / pred[i].numel() for i in range(3)]
        )
        torch.testing.assert_close(PixelLoss(p=p)(pred, target), expected, **tol(torch.float32))
    # Half the pixels off by 0.5, the rest exact: L1 = 0.25, L2 = 0.125.
    target = torch.zeros(1, 1, 4, 4)
    pred = target.clone()
    pred[..., :2, :] = 0.5
    assert float(PixelLoss(p=1)(pred, target)) == 0.25
    assert float(PixelLoss(p=2)(pred, target)) == 0.125


@pytest.mark.parametrize("p", [0, 3, 1.5, "l1"])
def test_pixel_loss_bad_p(p):
    with pytest.raises(ValueError, match="p=1"):
        PixelLoss(p=p)
