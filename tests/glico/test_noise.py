import pytest
import torch

from glico.noise import AdditiveNoise, ConcatNoise, NoNoise


def test_concat_appends_gaussian_noise_with_sigma(gen):
    z = torch.nn.functional.normalize(torch.randn(20000, 4, generator=gen), dim=1)
    out = ConcatNoise(dim=3, sigma=0.5)(z, generator=gen)
    assert out.shape == (20000, 7)
    torch.testing.assert_close(out[:, :4], z)
    eps = out[:, 4:]
    # mean within 5 standard errors of 0, std within 5 % of sigma
    assert eps.mean().abs() < 5 * 0.5 / (eps.numel() ** 0.5)
    assert abs(float(eps.std()) - 0.5) < 0.025


def test_additive_keeps_dim_and_perturbs(gen):
    z = torch.randn(5000, 8, generator=gen)
    out = AdditiveNoise(sigma=0.2)(z, generator=gen)
    assert out.shape == z.shape
    assert abs(float((out - z).std()) - 0.2) < 0.01


def test_none_is_identity(gen):
    z = torch.randn(3, 8, generator=gen)
    assert NoNoise()(z) is z and NoNoise().out_dim(8) == 8


def test_out_dims():
    assert ConcatNoise(dim=32).out_dim(128) == 160
    assert AdditiveNoise().out_dim(128) == 128


@pytest.mark.parametrize("bad", [dict(dim=0), dict(sigma=-1.0)])
def test_concat_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        ConcatNoise(**bad)
