"""FID: the Fréchet distance against closed forms and scipy, feature statistics against numpy, the Inception
extractor's preprocessing, weights paths and errors."""
import re
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torchvision.models import Inception_V3_Weights, ResNet50_Weights
from torchvision.models.inception import InceptionAux

from glico.experiments.fid import (
    FeatureStatistics,
    InceptionFeatures,
    feature_statistics,
    fid,
    frechet_distance,
)
from tests.tolerances import tol

F64 = tol(torch.float64)


@pytest.fixture(scope="module", autouse=True)
def one_intra_op_thread():
    """One intra-op thread while these tests run, restored afterwards: on a shared 2-core machine, OpenMP
    threads waiting on each other made Inception and 2048-d eigen-decompositions several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
DOC = Path(__file__).resolve().parents[3] / "docs" / "fid.md"


def assert_close64(actual: float, expected: float) -> None:
    torch.testing.assert_close(
        torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64), **F64
    )


def random_covariance(rng: np.random.Generator, dim: int, rank: int | None = None) -> np.ndarray:
    a = rng.normal(size=(dim, rank or dim))
    return a @ a.T / (rank or dim) + (0.0 if rank else 0.1) * np.eye(dim)


def random_orthogonal(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The textbook formula with scipy's general matrix square root of Σ1Σ2."""
    root = scipy.linalg.sqrtm(sigma1 @ sigma2)
    assert np.abs(root.imag).max(initial=0.0) < 1e-8 * max(1.0, np.abs(root.real).max())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(root.real))


dims = st.integers(min_value=1, max_value=12)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


# ------------------------------------------------------------------------------------------------------
# frechet_distance
# ------------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(dim=dims, seed=seeds, zeros=st.integers(min_value=0, max_value=3))
def test_diagonal_covariances_closed_form(dim, seed, zeros):
    # N(μ1, diag a) vs N(μ2, diag b): ‖μ1 − μ2‖² + Σ (√a − √b)², also with zero variances (singular Σ).
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(0, 3, dim), rng.uniform(0, 3, dim)
    a[: min(zeros, dim)] = 0.0
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert_close64(frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), expected)


@settings(max_examples=30, deadline=None)
@given(dim=dims, seed=seeds)
def test_commuting_covariances_closed_form_and_scipy(dim, seed):
    # Σ1 = Q diag(a) Qᵀ and Σ2 = Q diag(b) Qᵀ commute; the distance is basis-free, so the diagonal form holds.
    rng = np.random.default_rng(seed)
    q = random_orthogonal(rng, dim)
    a, b = rng.uniform(0.05, 3, dim), rng.uniform(0.05, 3, dim)
    sigma1, sigma2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    got = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert_close64(got, expected)
    assert_close64(got, scipy_frechet(mu1, sigma1, mu2, sigma2))


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(min_value=2, max_value=16), seed=seeds)
def test_non_commuting_covariances_match_scipy(dim, seed):
    rng = np.random.default_rng(seed)
    sigma1, sigma2 = random_covariance(rng, dim), random_covariance(rng, dim)
    assert not np.allclose(sigma1 @ sigma2, sigma2 @ sigma1)
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    assert_close64(frechet_distance(mu1, sigma1, mu2, sigma2), scipy_frechet(mu1, sigma1, mu2, sigma2))


def test_two_dimensional_worked_example():
    # Σ1 = I, Σ2 = [[2, 1], [1, 2]] (eigenvalues 1, 3): Tr((Σ1Σ2)^½) = 1 + √3,
    # so d = 2 + 4 − 2(1 + √3) + ‖(1, 2)‖².
    sigma2 = torch.tensor([[2.0, 1.0], [1.0, 2.0]])
    d = frechet_distance(torch.zeros(2), torch.eye(2), torch.tensor([1.0, 2.0]), sigma2)
    assert_close64(d, 6 - 2 * (1 + np.sqrt(3)) + 5)


@settings(max_examples=30, deadline=None)
@given(dim=dims, seed=seeds)
def test_properties_symmetry_identity_translation_rotation(dim, seed):
    rng = np.random.default_rng(seed)
    sigma1, sigma2 = random_covariance(rng, dim), random_covariance(rng, dim)
    mu1, mu2, v = rng.normal(size=dim), rng.normal(size=dim), rng.normal(size=dim)
    d12 = frechet_distance(mu1, sigma1, mu2, sigma2)
    assert d12 >= 0
    assert_close64(frechet_distance(mu2, sigma2, mu1, sigma1), d12)
    assert frechet_distance(mu1, sigma1, mu1, sigma1) <= F64["atol"] * max(1.0, np.trace(sigma1))
    # Translating both sets changes nothing; translating one of two equal means adds ‖v‖².
    assert_close64(frechet_distance(mu1 + v, sigma1, mu2 + v, sigma2), d12)
    base = frechet_distance(mu1, sigma1, mu1, sigma2)
    assert_close64(frechet_distance(mu1 + v, sigma1, mu1, sigma2), base + (v**2).sum())
    # An orthogonal change of feature basis changes nothing.
    q = random_orthogonal(rng, dim)
    assert_close64(frechet_distance(q @ mu1, q @ sigma1 @ q.T, q @ mu2, q @ sigma2 @ q.T), d12)


def singular_conditioning_bound(dim: int, sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """How far any floating-point evaluation can be from the exact FID when a covariance is singular.

    Tr((Σ1Σ2)^½) sums square roots of eigenvalues, and √ is not Lipschitz at 0: an eigenvalue that is 0 in
    exact arithmetic is computed as ±δ with δ ≈ dim·eps·‖Σ1‖‖Σ2‖ (backward error of the eigen-decomposition),
    and contributes up to √δ. So the forward error is bounded by 2·dim·√δ, not by a multiple of eps; this is
    the problem's conditioning (the float64 inputs themselves are singular only up to rounding), not a looser
    float64 tolerance. Full-rank covariances are checked at tol(float64) in the other tests.
    """
    eps = np.finfo(np.float64).eps
    delta = dim * eps * np.linalg.norm(sigma1, 2) * np.linalg.norm(sigma2, 2)
    return 2 * dim * np.sqrt(delta)


@settings(max_examples=30, deadline=None)
@given(dim=st.integers(min_value=2, max_value=12), seed=seeds, rank=st.integers(min_value=0, max_value=11))
def test_rank_deficient_covariances(dim, seed, rank):
    # What few samples of many features give: Σ1 of rank < dim, written in a rotated basis (so its zero
    # eigenvalues are zero only up to rounding); commuting with Σ2, so the closed form is known.
    rng = np.random.default_rng(seed)
    rank = min(rank, dim - 1)
    q = random_orthogonal(rng, dim)
    a = np.concatenate([rng.uniform(0.05, 3, rank), np.zeros(dim - rank)])
    b = rng.uniform(0.05, 3, dim)
    sigma1, sigma2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    bound = singular_conditioning_bound(dim, sigma1, sigma2) + F64["atol"] + F64["rtol"] * expected
    assert abs(frechet_distance(mu1, sigma1, mu2, sigma2) - expected) <= bound
    assert abs(frechet_distance(mu2, sigma2, mu1, sigma1) - expected) <= bound
    # The identity needs no square root of a rounding error: √(λ²) = λ.
    assert frechet_distance(mu1, sigma1, mu1, sigma1) <= F64["atol"] * max(1.0, np.trace(sigma1))


def test_torch_and_numpy_inputs_agree_and_float32_is_accepted():
    rng = np.random.default_rng(3)
    s1, s2 = random_covariance(rng, 5), random_covariance(rng, 5)
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    expected = frechet_distance(m1, s1, m2, s2)
    assert frechet_distance(*(torch.from_numpy(x) for x in (m1, s1, m2, s2))) == expected
    f32 = [x.astype(np.float32).astype(np.float64) for x in (m1, s1, m2, s2)]
    assert frechet_distance(*(torch.from_numpy(x).float() for x in f32)) == frechet_distance(*f32)


def test_frechet_distance_errors():
    eye = np.eye(3)
    with pytest.raises(ValueError, match="different dimensions: 3 and 4"):
        frechet_distance(np.zeros(3), eye, np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match=r"sigma2 must have shape \(3, 3\)"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="not symmetric"):
        frechet_distance(np.zeros(3), eye, np.zeros(3), eye + np.triu(np.ones((3, 3)), 1))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        frechet_distance(np.zeros(3), np.diag([1.0, 1.0, -0.5]), np.zeros(3), eye)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.array([0.0, np.nan, 0.0]), eye, np.zeros(3), eye)
    with pytest.raises(ValueError, match=r"shape \(F,\)"):
        frechet_distance(np.zeros((3, 1)), eye, np.zeros(3), eye)
    with pytest.raises(TypeError, match="numpy array"):
        frechet_distance("abc", eye, np.zeros(3), eye)


# ------------------------------------------------------------------------------------------------------
# feature_statistics and fid with small extractors
# ------------------------------------------------------------------------------------------------------


class Projection(nn.Module):
    """A fixed random linear map of the flattened pixels: a toy extractor with parameters."""

    def __init__(self, pixels: int, features: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(pixels, features, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight


def flatten(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1)


@pytest.mark.parametrize("n,batch_size", [(13, 4), (2, 1), (7, 50)])
def test_feature_statistics_equal_numpy_mean_and_cov(gen, n, batch_size):
    images = torch.rand(n, 3, 4, 4, generator=gen)
    extractor = Projection(48, 6)
    stats = feature_statistics(images, extractor, batch_size=batch_size, progress=False)
    assert isinstance(stats, FeatureStatistics)
    # The same float32 features (a matmul's rounding depends on the batch size), then numpy in float64.
    feats = torch.cat([extractor(images[i : i + batch_size]) for i in range(0, n, batch_size)]).double().numpy()
    assert stats.mu.dtype == stats.sigma.dtype == torch.float64
    torch.testing.assert_close(stats.mu, torch.from_numpy(feats.mean(axis=0)), **F64)
    torch.testing.assert_close(stats.sigma, torch.from_numpy(np.cov(feats, rowvar=False)), **F64)


def test_feature_statistics_from_an_iterable_of_batches(gen):
    images = torch.rand(10, 1, 5, 5, generator=gen)
    whole = feature_statistics(images, flatten, progress=False)
    parts = feature_statistics(iter([images[:3], images[3:4], images[4:]]), flatten, progress=False)
    torch.testing.assert_close(parts.mu, whole.mu, **F64)
    torch.testing.assert_close(parts.sigma, whole.sigma, **F64)


def test_feature_statistics_keep_precision_under_a_large_offset(gen):
    # Features of scale 1e8 with unit spread: a plain Σx xᵀ / N − μμᵀ would lose every digit of the covariance.
    images = torch.rand(40, 1, 2, 2, generator=gen, dtype=torch.float64)

    def offset(x):
        return x.flatten(1) + 1e8

    stats = feature_statistics(images, offset, batch_size=7, progress=False)
    feats = offset(images).numpy()
    plain = (feats.T @ feats - len(feats) * np.outer(feats.mean(0), feats.mean(0))) / (len(feats) - 1)
    expected = np.cov(feats, rowvar=False)  # numpy centres first
    assert np.abs(plain - expected).max() > 10 * np.abs(expected).max()  # the one-pass formula is hopeless
    torch.testing.assert_close(stats.mu, torch.from_numpy(feats.mean(0)), **F64)
    torch.testing.assert_close(stats.sigma, torch.from_numpy(expected), **F64)


def test_feature_statistics_run_the_extractor_on_its_device_without_grad(gen):
    seen = []
    extractor = Projection(4, 3)
    extractor.weight.requires_grad_(True)

    def spy(module, args, output):
        seen.append((args[0].device, torch.is_grad_enabled()))

    extractor.register_forward_hook(spy)
    feature_statistics(torch.rand(5, 1, 2, 2, generator=gen), extractor, batch_size=2, device="cpu", progress=False)
    assert seen == [(torch.device("cpu"), False)] * 3


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric(gen):
    real = torch.rand(30, 3, 4, 4, generator=gen)
    fake = (real * 0.7 + 0.1 * torch.rand(30, 3, 4, 4, generator=gen)).clamp(0, 1)
    extractor = Projection(48, 5)
    assert fid(real, real, extractor, progress=False) <= F64["atol"]
    forward = fid(real, fake, extractor, batch_size=8, progress=False)
    assert forward > 0.1
    assert_close64(fid(fake, real, extractor, batch_size=8, progress=False), forward)
    # Same value as the formula on numpy's statistics.
    r, f = (extractor(x).double().numpy() for x in (real, fake))
    expected = scipy_frechet(r.mean(0), np.cov(r, rowvar=False), f.mean(0), np.cov(f, rowvar=False))
    assert_close64(forward, expected)


def test_fid_of_translated_features_adds_the_squared_shift(gen):
    images = torch.rand(20, 1, 3, 3, generator=gen)
    v = torch.randn(9, generator=gen, dtype=torch.float64)
    real = feature_statistics(images, flatten, progress=False)
    moved = feature_statistics(images, lambda x: x.double().flatten(1) + v, progress=False)
    assert_close64(frechet_distance(real.mu, real.sigma, moved.mu, moved.sigma), float(v.square().sum()))


@pytest.mark.parametrize(
    "bad,error,message",
    [
        (torch.randint(0, 255, (4, 3, 8, 8), dtype=torch.uint8), TypeError, "divide uint8 images by 255"),
        (torch.rand(4, 3, 8, 8) * 255, ValueError, r"\[0, 1\]"),
        (torch.rand(4, 8, 8), ValueError, r"\(N, C, H, W\)"),
        ([[0.5]], TypeError, "torch.Tensor"),
        (3.0, TypeError, "torch.Tensor"),
        (iter([]), ValueError, "yielded no image batches"),
    ],
)
def test_fid_refuses_non_images_before_building_anything(offline, gen, bad, error, message):
    real = torch.rand(4, 3, 8, 8, generator=gen)
    # extractor=None: the check must fail before Inception is built (which would need weights here).
    with pytest.raises(error, match=message):
        fid(real, bad, progress=False)
    with pytest.raises(error, match=message):
        fid(bad, real, flatten, progress=False)


def test_fid_needs_two_images_per_set(gen):
    two, one = torch.rand(2, 1, 4, 4, generator=gen), torch.rand(1, 1, 4, 4, generator=gen)
    with pytest.raises(ValueError, match="at least 2 fake images.*got 1"):
        fid(two, one, progress=False)
    with pytest.raises(ValueError, match="at least 2 images.*got 1"):
        feature_statistics(one, flatten, progress=False)
    with pytest.raises(ValueError, match="at least 2 images.*got 1"):
        fid(iter([two]), iter([one]), flatten, progress=False)


def test_fid_refuses_mismatched_feature_dimensions(gen):
    real, fake = torch.rand(5, 1, 4, 4, generator=gen), torch.rand(5, 1, 3, 3, generator=gen)
    with pytest.raises(ValueError, match="16 features for the real images and 9 for the fake"):
        fid(real, fake, flatten, progress=False)


def test_feature_statistics_refuse_bad_extractor_output(gen):
    images = torch.rand(6, 1, 4, 4, generator=gen)
    with pytest.raises(ValueError, match=r"\(B, F\).*returned \(3, 1, 4, 4\)"):
        feature_statistics(images, lambda x: x, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="same dimension for every batch"):
        feature_statistics(iter([images[:3], images[3:, :, :2]]), flatten, progress=False)
    with pytest.raises(ValueError, match="NaN or infinite"):
        feature_statistics(images, lambda x: x.flatten(1) / 0, progress=False)
    with pytest.raises(TypeError, match="image batch must be a floating-point"):
        feature_statistics(iter([images, images.to(torch.uint8)]), flatten, progress=False)


# ------------------------------------------------------------------------------------------------------
# InceptionFeatures
# ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def random_inception() -> InceptionFeatures:
    torch.manual_seed(0)
    return InceptionFeatures(weights=None)


@pytest.fixture
def hub_dir(tmp_path):
    """An empty torch hub cache, so that no cached checkpoint can satisfy a lookup."""
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub"
    torch.hub.set_dir(previous)


@pytest.fixture
def offline(monkeypatch, hub_dir):
    def fail(*args, **kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)
    return hub_dir


def test_inception_features_shapes_preprocessing_and_frozen(random_inception, gen):
    seen = []
    handle = random_inception.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        grey = torch.rand(2, 1, 28, 28, generator=gen)
        out = random_inception(grey)
        assert out.shape == (2, 2048) and out.dtype == torch.float32 and bool(torch.isfinite(out).all())
        assert seen[-1].shape == (2, 3, 299, 299)
        # A constant grey image reaches the network as ImageNet-normalised RGB.
        out = random_inception(torch.full((1, 1, 5, 7), 0.5, dtype=torch.float64))
        assert out.shape == (1, 2048)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        torch.testing.assert_close(seen[-1], ((0.5 - mean) / std).expand(1, 3, 299, 299), **tol(torch.float32))
    finally:
        handle.remove()
    assert not any(p.requires_grad for p in random_inception.parameters())
    random_inception.train()
    assert not random_inception.backbone.training
    assert not any(m.training for m in random_inception.backbone.modules())
    random_inception.eval()


def test_inception_features_refuse_other_channel_counts_and_non_images(random_inception, gen):
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\) channels; got 2"):
        random_inception(torch.rand(1, 2, 8, 8, generator=gen))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        random_inception(torch.rand(1, 3, 8, 8, generator=gen) * 255)


def test_fid_with_inception_features(random_inception, gen):
    # A slice of the 2048 features keeps the eigen-decompositions cheap; the full size runs in the slow test.
    def first_features(x):
        return random_inception(x)[:, :32]

    real = torch.rand(2, 1, 16, 16, generator=gen)
    fake = torch.rand(2, 1, 16, 16, generator=gen) * 0.5
    # (FID of a set with itself is checked on cheap extractors above and on the full features in the slow test.)
    assert fid(real, fake, first_features, progress=False) > 0


@pytest.mark.slow
def test_fid_with_full_random_inception_features(random_inception, gen):
    real = torch.rand(3, 3, 16, 16, generator=gen)
    assert fid(real, real, random_inception, batch_size=3, progress=False) <= 1e-6 * 2048
    assert fid(real, torch.zeros(3, 3, 16, 16), random_inception, batch_size=3, progress=False) > 0


def test_missing_inception_weights_give_an_actionable_error(offline, gen):
    url = Inception_V3_Weights.IMAGENET1K_V1.url
    with pytest.raises(RuntimeError) as info:
        InceptionFeatures()
    message = str(info.value)
    assert url in message
    assert str(offline / "checkpoints" / "inception_v3_google-0cc3c7bd.pth") in message
    assert "weights=<path of that file>" in message and "weights=None" in message and "extractor=" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    # fid's default extractor is the pretrained one, with the same error.
    with pytest.raises(RuntimeError, match=re.escape(url)):
        fid(torch.rand(2, 1, 4, 4, generator=gen), torch.rand(2, 1, 4, 4, generator=gen), progress=False)


def test_inception_weights_from_a_local_torchvision_format_file(random_inception, tmp_path):
    # The format of torchvision's checkpoint: the backbone plus the 1000-class fc and the auxiliary head.
    state = dict(random_inception.backbone.state_dict())
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.zeros(1000)
    state.update({f"AuxLogits.{k}": v for k, v in InceptionAux(768, 1000).state_dict().items()})
    path = tmp_path / "inception.pth"
    torch.save(state, path)
    torch.manual_seed(1)  # a different random start, which the file must overwrite entirely
    loaded = InceptionFeatures(weights=path)
    # Equal tensors in the same architecture: the features are equal too (forward passes are checked above).
    expected = random_inception.backbone.state_dict()
    assert loaded.backbone.state_dict().keys() == expected.keys()
    for name, value in expected.items():
        torch.testing.assert_close(loaded.backbone.state_dict()[name], value, rtol=0, atol=0)
    assert not loaded.backbone.training and not any(p.requires_grad for p in loaded.parameters())


def test_inception_weights_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        InceptionFeatures(weights=tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        InceptionFeatures(weights=garbage)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(ValueError, match="not a torchvision Inception-v3 state dict"):
        InceptionFeatures(weights=wrong)
    with pytest.raises(TypeError, match="Inception_V3_Weights"):
        InceptionFeatures(weights=ResNet50_Weights.IMAGENET1K_V2)
    with pytest.raises(TypeError, match="got int"):
        InceptionFeatures(weights=3)


def test_doc_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "no python example in docs/fid.md"
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})
