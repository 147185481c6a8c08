import pytest
import torch

from glico.latents import CodeTable, FeatureInit, HypercubeInit, PCAInit, RandomSphere


def _images(gen, n=30):
    return torch.rand(n, 1, 8, 8, generator=gen)


@pytest.mark.parametrize("init", [RandomSphere(), HypercubeInit(), PCAInit(), FeatureInit(lambda x: x.flatten(1) ** 2)])
def test_initialisers_give_unit_codes_of_the_right_shape(init, gen):
    labels = torch.arange(30) % 3
    z = init(_images(gen), labels, 16, gen)
    assert z.shape == (30, 16)
    torch.testing.assert_close(z.norm(dim=1), torch.ones(30))


def test_hypercube_groups_classes(gen):
    labels = torch.arange(60) % 3
    z = HypercubeInit(spread=0.3)(_images(gen, 60), labels, 64, gen)
    cos = z @ z.T
    same = labels[:, None] == labels[None, :]
    off_diag = ~torch.eye(60, dtype=torch.bool)
    assert cos[same & off_diag].mean() > cos[~same].mean() + 0.5


def test_pca_init_preserves_angles_of_a_planar_set(gen):
    # images = 0.5 + 0.3 (cos φ e1 + sin φ e2): PCA codes, normalised, are (cos φ, sin φ) up to a
    # rotation/reflection of the plane, so cosines between codes equal cos(φ_i - φ_j).
    phi = torch.arange(24) * (2 * torch.pi / 24) + 0.3  # evenly spread: the centred set stays planar
    e1, e2 = torch.zeros(64), torch.zeros(64)
    e1[10], e2[37] = 1.0, 1.0
    images = (0.5 + 0.3 * (phi.cos()[:, None] * e1 + phi.sin()[:, None] * e2)).view(24, 1, 8, 8)
    z = PCAInit()(images, torch.zeros(24, dtype=torch.long), 8, gen)
    want = torch.cos(phi[:, None] - phi[None, :])
    torch.testing.assert_close((z @ z.T).double(), want.double(), atol=2e-3, rtol=0)


def test_code_table_sparse_grad_and_projection(gen):
    table = CodeTable(torch.randn(10, 5, generator=gen))
    torch.testing.assert_close(table.weight.norm(dim=1), torch.ones(10))
    idx = torch.tensor([1, 4, 4])
    table(idx).sum().backward()
    assert table.weight.grad.is_sparse
    before = table.weight.detach().clone()
    with torch.no_grad():
        table.weight.mul_(3.0)
    table.project_(idx)
    w = table.weight.detach()
    torch.testing.assert_close(w[[1, 4]].norm(dim=1), torch.ones(2))
    untouched = [0, 2, 3, 5, 6, 7, 8, 9]
    torch.testing.assert_close(w[untouched], 3.0 * before[untouched])  # O(len(idx)), not O(N)


def test_code_table_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        CodeTable(torch.randn(5))
