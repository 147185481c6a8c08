"""The plain-Triton atan2 (the interpreter has no atan2/acos) against math.atan2."""
import math

import numpy as np
import pytest
import torch

from kernel_helpers import device, requires_triton

pytestmark = requires_triton


def _atan2(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    from kernels.triton_common import atan2

    out = atan2(torch.from_numpy(y).to(device()), torch.from_numpy(x).to(device()))
    return out.cpu().double().numpy()


def test_dense_grid_absolute_error():
    # 1001 x 1001 grid of the quadrant, including the axes and the diagonal.
    g = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    y, x = np.meshgrid(g, g, indexing="ij")
    y, x = y.ravel().copy(), x.ravel().copy()
    got = _atan2(y, x)
    want = np.array([math.atan2(float(a), float(b)) for a, b in zip(y[::97], x[::97])])
    assert np.abs(got[::97] - want).max() < 2.5e-7  # ~2 ulp at pi/2
    full = np.arctan2(y.astype(np.float64), x.astype(np.float64))
    assert np.abs(got - full).max() < 2.5e-7


def test_relative_error_over_many_scales():
    # atan2(y, x) for ratios from 1e-30 to 1e30: relative error within a few float32 ulps.
    ratios = np.logspace(-30, 30, 20001).astype(np.float32)
    x = np.ones_like(ratios)
    got = _atan2(ratios, x)
    want = np.arctan2(ratios.astype(np.float64), 1.0)
    assert (np.abs(got - want) / want).max() < 4 * 2**-23
    got_swapped = _atan2(x, ratios)
    want_swapped = np.arctan2(1.0, ratios.astype(np.float64))
    assert (np.abs(got_swapped - want_swapped) / want_swapped).max() < 4 * 2**-23


@pytest.mark.parametrize(
    "y, x, want",
    [(0.0, 0.0, 0.0), (0.0, 1.0, 0.0), (1.0, 0.0, math.pi / 2), (1.0, 1.0, math.pi / 4), (2.0, 2.0, math.pi / 4)],
)
def test_special_points(y, x, want):
    got = _atan2(np.array([y], np.float32), np.array([x], np.float32))[0]
    assert abs(got - want) < 2.5e-7


def test_half_angle_form_gives_the_angle_between_unit_vectors():
    # theta = 2 atan2(|a - b|, |a + b|) for unit a, b at known angles, over [0, pi].
    theta = np.linspace(0.0, math.pi, 4001)
    u = 2 * np.sin(theta / 2)
    v = 2 * np.cos(theta / 2)
    got = 2 * _atan2(u.astype(np.float32), np.abs(v).astype(np.float32))
    assert np.abs(got - theta).max() < 1e-6
