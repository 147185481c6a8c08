"""The composer: fitting lowers the reconstruction loss, codes stay on the sphere, gradients reach
every part, sampling keeps class structure, save/load round trips."""
import pytest
import torch

from glico import GLICO
from glico.augment import GLICOAugmenter
from glico.classifiers import LatentMLP, WeakCNN
from glico.interpolation import Lerp
from glico.losses import PixelLoss
from glico.noise import NoNoise
from glico.training import FitConfig, fit
from tests.glico.toy_data import toy_data
from tests.tolerances import tol


def small_model(**kw):
    defaults = dict(code_dim=16, loss=PixelLoss(p=2))
    defaults.update(kw)
    return GLICO(image_shape=(1, 8, 8), num_classes=3, **defaults)


def test_defaults_are_the_papers_choices():
    from glico.interpolation import Slerp
    from glico.latents import RandomSphere
    from glico.noise import ConcatNoise

    m = GLICO(image_shape=(1, 8, 8), num_classes=3, loss=PixelLoss())
    assert m.code_dim == 128
    assert isinstance(m.noise, ConcatNoise) and isinstance(m.interpolator, Slerp)
    assert isinstance(m.classifier, WeakCNN) and isinstance(m.init, RandomSphere)
    assert m.t_values == (0.1, 0.2, 0.3, 0.4)


def test_fit_lowers_reconstruction_and_keeps_codes_on_sphere():
    x, y = toy_data()
    m = small_model()
    norms = []
    h = fit(m, x, y, config=FitConfig(epochs=150, progress=False, log_every=10),
            on_log=lambda s, l: norms.append(m.codes.weight.detach().norm(dim=1)))
    assert h.reconstruction[-1] < 0.5 * h.reconstruction[0]
    for n in norms:
        torch.testing.assert_close(n, torch.ones_like(n))
    rec = m.reconstruct()
    assert ((rec - x) ** 2).mean() < 0.02


def test_gradients_reach_codes_generator_and_classifier():
    x, y = toy_data()
    m = small_model()
    m.init_codes(x, y, torch.Generator().manual_seed(0))
    losses = m.step_losses(x, torch.arange(len(x)))
    losses.total.backward()
    assert m.codes.weight.grad is not None and m.codes.weight.grad.coalesce().values().abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.generator.parameters())
    assert all(p.grad is not None for p in m.classifier.parameters())
    assert losses.classification > 0


def test_latent_classifier_gets_codes():
    x, y = toy_data()
    m = small_model(classifier=LatentMLP(code_dim=16, num_classes=3))
    m.init_codes(x, y, torch.Generator().manual_seed(0))
    m.step_losses(x, torch.arange(len(x))).total.backward()
    assert m.codes.weight.grad is not None


def test_no_classifier_means_no_classification_term():
    x, y = toy_data()
    m = small_model(classifier=None)
    m.init_codes(x, y, torch.Generator().manual_seed(0))
    assert float(m.step_losses(x, torch.arange(len(x))).classification) == 0.0


def test_unlabeled_images_get_codes_but_no_class_loss():
    x, y = toy_data()
    m = small_model()
    unl = x[:5].flip(-1)
    fit(m, x, y, unlabeled=unl, config=FitConfig(epochs=2, progress=False))
    assert m.codes.num_codes == len(x) + 5
    assert (m.labels[len(x):] == -1).all()
    # unlabelled codes are never partners or anchors of class samples
    idx = m.class_index
    for c in range(3):
        members = idx.order[idx.offsets[c] : idx.offsets[c + 1]]
        assert (members < len(x)).all() and len(members) == 4


def test_samples_keep_class_structure():
    """A classifier fitted jointly recognises the class of new samples."""
    x, y = toy_data(n_per_class=5)
    m = small_model(gamma=0.5)
    fit(m, x, y, config=FitConfig(epochs=200, progress=False))
    labels = torch.arange(3).repeat_interleave(20)
    s = m.sample(labels, seed=1)
    assert s.shape == (60, 1, 8, 8) and s.min() >= 0 and s.max() <= 1
    # the class is the bright row block: nearest class mean wins
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    pred = ((s[:, None] - means[None]) ** 2).flatten(2).sum(-1).argmin(1)
    assert (pred == labels).float().mean() > 0.9


def test_augmenter_replaces_about_p_and_keeps_shape():
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=3, progress=False))
    aug = GLICOAugmenter(m, p=0.5, seed=0)
    big = x.repeat(50, 1, 1, 1)
    idx = torch.arange(len(x)).repeat(50)
    out = aug(big, idx)
    assert out.shape == big.shape
    replaced = (out != big).flatten(1).any(1).float().mean()
    assert 0.4 < replaced < 0.6  # 600 coin flips: 5 sigma ~ 0.1
    assert torch.equal(GLICOAugmenter(m, p=0.0)(x, torch.arange(len(x))), x)


def test_augmenter_generating_only_the_replaced_rows_gives_the_full_batch_result():
    # only_replaced runs the generator on about p*B rows; the draws and the eval-mode generator are the
    # same, so the images match the whole-batch path to float32 rounding, and kept rows are untouched.
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=3, progress=False))
    big, idx = x.repeat(8, 1, 1, 1), torch.arange(len(x)).repeat(8)
    calls = []
    m.generator.register_forward_hook(lambda mod, args, out: calls.append(args[0].shape[0]))
    m.generator.train()
    full = GLICOAugmenter(m, p=0.3, seed=5, only_replaced=False)(big, idx)
    part = GLICOAugmenter(m, p=0.3, seed=5, only_replaced=True)(big, idx)
    default = GLICOAugmenter(m, p=0.3, seed=5)(big, idx)  # CPU: only the replaced rows
    replaced = (full != big).flatten(1).any(1)
    assert calls[0] == len(big) and calls[1] == calls[2] == int(replaced.sum()) < len(big)
    torch.testing.assert_close(part, full, **tol(torch.float32))
    assert torch.equal(part[~replaced], big[~replaced]) and torch.equal(default, part)
    assert m.generator.training  # the generator's mode is restored (it ran in eval mode)


def test_augmenter_bank_reuses_one_image_per_example_for_refresh_every_calls():
    # refresh_every = 3: calls 0-2 take each replaced example's image from one bank, calls 3-5 from a new
    # one. A bank is what a fresh draw gives for every code-table row at once: the images of a p = 1,
    # whole-batch call with idx = 0..N-1 and the seed of the call that drew the bank.
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=3, progress=False))
    n = len(x)
    aug = GLICOAugmenter(m, p=1.0, seed=7, refresh_every=3)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    calls = [aug(x, torch.arange(n)), aug(x[perm], perm), aug(x, torch.arange(n)), aug(x, torch.arange(n))]
    first = GLICOAugmenter(m, p=1.0, seed=7, only_replaced=False)(x, torch.arange(n))
    second = GLICOAugmenter(m, p=1.0, seed=7 + 1_000_003 * 3, only_replaced=False)(x, torch.arange(n))
    torch.testing.assert_close(calls[0], first, **tol(torch.float32))
    assert torch.equal(calls[1], calls[0][perm]) and torch.equal(calls[2], calls[0])
    torch.testing.assert_close(calls[3], second, **tol(torch.float32))
    assert not torch.allclose(calls[3], calls[0])
    # With p < 1 the coins are fresh at every call: kept rows are untouched, replaced rows are bank images.
    half = GLICOAugmenter(m, p=0.5, seed=7, refresh_every=100)
    big, idx = x.repeat(10, 1, 1, 1), torch.arange(n).repeat(10)
    a, b = half(big, idx), half(big, idx)
    ra, rb = (a != big).flatten(1).any(1), (b != big).flatten(1).any(1)
    assert 0.3 < ra.float().mean() < 0.7 and not torch.equal(ra, rb)
    torch.testing.assert_close(a[ra], first[idx[ra]], **tol(torch.float32))
    torch.testing.assert_close(b[rb], first[idx[rb]], **tol(torch.float32))
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="refresh_every must be a whole number of calls >= 1"):
            GLICOAugmenter(m, refresh_every=bad)


def test_augmenter_t_values_override_the_models():
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="t_values must be a non-empty set of numbers in \\[0, 1\\]"):
        GLICOAugmenter(m, t_values=(0.2, 1.5))
    # t = 0 is the anchor's own code: with p = 1 every image becomes the anchor's reconstruction plus noise,
    # whichever partner is drawn, so two seeds agree up to the noise only.
    aug0 = GLICOAugmenter(m, p=1.0, seed=1, t_values=(0.0,))
    assert aug0.t_values == (0.0,) and GLICOAugmenter(m).t_values == m.t_values
    idx = torch.arange(len(x))
    a, b = aug0(x, idx), GLICOAugmenter(m, p=1.0, seed=2, t_values=(0.0,))(x, idx)
    far = GLICOAugmenter(m, p=1.0, seed=2, t_values=(1.0,))(x, idx)
    assert (a - b).abs().mean() < (a - far).abs().mean()


@pytest.mark.filterwarnings("ignore:GLICOAugmenter. idx holds only values")  # repeated anchors on purpose
def test_augmenter_partners_are_uniform_over_the_class_whatever_the_coin(monkeypatch):
    # The coin flip and the partner draw must be independent: a replaced example's partner is uniform
    # over the other members of its class (with one shared stream it was a function of the coin).
    import kernels

    x, y = toy_data(n_per_class=10)
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    partners = []
    real = kernels.sample_codes

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        partners.append(out.partners)
        return out

    monkeypatch.setattr(kernels, "sample_codes", spy)
    anchor = int(torch.nonzero(y == 0)[0])
    members = torch.nonzero(y == 0).flatten()
    aug = GLICOAugmenter(m, p=0.5, seed=0)
    batch = x[anchor : anchor + 1].expand(400, -1, -1, -1)
    chosen = []
    for _ in range(10):
        out = aug(batch, torch.full((400,), anchor))
        replaced = (out != batch).flatten(1).any(1)
        chosen.append(partners[-1][replaced])
    chosen = torch.cat(chosen)
    counts = torch.bincount(chosen, minlength=len(x))[members[members != anchor]].float()
    assert counts.sum() == chosen.numel()  # same class, never the anchor
    expected = chosen.numel() / counts.numel()  # ~2000 replaced, over 9 other members
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    df = counts.numel() - 1
    assert chi2 < df + 5 * (2 * df) ** 0.5, (chi2, counts.tolist())  # 5 sd above the chi-square mean


def test_save_load_round_trip(tmp_path):
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=3, progress=False))
    m.save(tmp_path / "m.pt")
    m2 = small_model()
    m2.load(tmp_path / "m.pt")
    torch.testing.assert_close(m2.codes.weight, m.codes.weight)
    torch.testing.assert_close(m2.sample([0, 1, 2], seed=4), m.sample([0, 1, 2], seed=4))


def test_load_refuses_a_different_composition(tmp_path):
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    m.save(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="interpolator"):
        small_model(interpolator=Lerp()).load(tmp_path / "m.pt")


@pytest.mark.parametrize(
    "images,labels,match",
    [
        (torch.rand(6, 1, 8, 8) * 255, torch.tensor([0, 0, 1, 1, 2, 2]), r"\[0, 1\]"),
        (torch.randint(0, 255, (6, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 0, 1, 1, 2, 2]), "255"),
        (torch.rand(6, 8, 8), torch.tensor([0, 0, 1, 1, 2, 2]), "N, C, H, W"),
        (torch.rand(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 2]), "match"),
        (torch.rand(6, 1, 8, 8), torch.tensor([0, 0, 1, 1, 3, 3]), "no examples"),
        (torch.rand(6, 1, 16, 16), torch.tensor([0, 0, 1, 1, 2, 2]), "built for"),
        (torch.full((6, 1, 8, 8), float("nan")), torch.tensor([0, 0, 1, 1, 2, 2]), "NaN"),
    ],
)
def test_fit_rejects_bad_input_clearly(images, labels, match):
    with pytest.raises((ValueError, TypeError), match=match):
        fit(small_model(), images, labels, config=FitConfig(epochs=1, progress=False))


def test_sample_before_fit_is_a_clear_error():
    with pytest.raises(RuntimeError, match="fit"):
        small_model().sample([0])


def test_mismatched_generator_and_noise_is_refused():
    from glico.generators import DCGANGenerator

    with pytest.raises(ValueError, match="inputs of length"):
        GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=16, loss=PixelLoss(),
              generator=DCGANGenerator(16 + 32, 8, 1), noise=NoNoise())


def test_generating_runs_the_generator_in_eval_mode_and_restores_its_mode_even_on_error(monkeypatch):
    x, y = toy_data()
    m = small_model()
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    seen = []
    m.generator.register_forward_pre_hook(lambda mod, args: seen.append(mod.training))
    for mode in (True, False):
        m.generator.train(mode)
        m.reconstruct()
        m.sample([0, 1])
        m.interpolate(0, 1, steps=3)
        assert m.generator.training is mode
    assert seen and not any(seen)

    def broken(*args):
        raise RuntimeError("generator failed")

    m.generator.train(True)
    monkeypatch.setattr(m.generator, "forward", broken)
    with pytest.raises(RuntimeError, match="generator failed"):
        m.reconstruct()
    assert m.generator.training


def test_same_seed_same_result():
    x, y = toy_data()
    outs = []
    for _ in range(2):
        torch.manual_seed(123)  # the model's own initial weights
        m = small_model()
        fit(m, x, y, config=FitConfig(epochs=3, progress=False, seed=5))
        outs.append((m.codes.weight.detach().clone(), m.sample([0, 1, 2], seed=1)))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=0, atol=0)


def test_a_custom_part_without_repr_saves_and_loads(tmp_path):
    # object's default repr holds a memory address: recorded as is, no second instance would match.
    class Quiet(NoNoise):
        __repr__ = object.__repr__

    x, y = toy_data()
    m = small_model(noise=Quiet())
    fit(m, x, y, config=FitConfig(epochs=1, progress=False))
    m.save(tmp_path / "m.pt")
    other = small_model(noise=Quiet())
    other.load(tmp_path / "m.pt")
    assert other.composition()["noise"] == "test_a_custom_part_without_repr_saves_and_loads.<locals>.Quiet()"
    with pytest.raises(ValueError, match="noise: checkpoint has"):
        small_model(noise=NoNoise()).load(tmp_path / "m.pt")


def test_custom_parts_that_break_the_contract_are_refused():
    import torch.nn as nn

    class NoShape(nn.Module):
        in_dim = 48

    with pytest.raises(TypeError, match="generator NoShape has no image_shape; expected a generator module"):
        small_model(generator=NoShape())
    with pytest.raises(TypeError, match="loss MSELoss has no prepare_target, forward_prepared"):
        small_model(loss=nn.MSELoss())
    with pytest.raises(ValueError, match="classifier has num_classes=10, but the model has num_classes=3"):
        small_model(classifier=WeakCNN(in_channels=1, num_classes=10, image_size=8))
    for gamma in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="gamma .* must be a finite number >= 0"):
            small_model(gamma=gamma)

    # What only a call shows is refused at the first step.
    x, y = toy_data()
    reduced = small_model(class_loss=nn.CrossEntropyLoss())  # mean over the batch: unlabelled rows would count
    with pytest.raises(ValueError, match=r"class_loss returned shape \(\); it must return one loss per example"):
        fit(reduced, x, y, config=FitConfig(epochs=1, progress=False))

    class MeanPixel(PixelLoss):
        def forward_prepared(self, pred, prepared):
            return super().forward_prepared(pred, prepared).mean()

    with pytest.raises(ValueError, match=r"MeanPixel returned shape \(\); a reconstruction loss returns one value per image"):
        fit(small_model(loss=MeanPixel()), x, y, config=FitConfig(epochs=1, progress=False))

