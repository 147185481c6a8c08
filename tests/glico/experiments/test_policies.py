"""Augmentation policies: each keeps the batch contract (shape, dtype, [0, 1], device), does what its
paper says on a batch, draws per image where it should, is seeded, and leaves the global RNG alone."""
import pytest
import torch
from torch.nn import functional as F

from glico import GLICO
from glico.augment import GLICOAugmenter
from glico.experiments.policies import (
    AutoAugment,
    Compose,
    Cutout,
    CutMix,
    GLICOPolicy,
    MixUp,
    RandAugment,
    RandomErasing,
    Standard,
    TrivialAugmentWide,
    build_policy,
    policy_names,
    soft_cross_entropy,
)
from tests.glico.toy_data import toy_data
from glico.losses import PixelLoss
from glico.training import FitConfig, fit

POLICIES = ("cutout", "random-erasing", "autoaugment", "randaugment", "trivialaugment", "mixup", "cutmix")
NAMES = ("baseline", *POLICIES, "glico", *(f"glico+{p}" for p in POLICIES),
         *(f"{p}+glico" for p in POLICIES if p not in ("mixup", "cutmix")))
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def fitted():
    """A tiny GLICO fitted for a few epochs on the toy set: (model, images, labels)."""
    torch.manual_seed(0)
    x, y = toy_data()
    m = GLICO(image_shape=(1, 8, 8), num_classes=3, code_dim=16, loss=PixelLoss(p=2))
    fit(m, x, y, config=FitConfig(epochs=3, progress=False))
    return m, x, y


def _batch(b=16, c=3, size=16, dtype=torch.float32, device="cpu", seed=0):
    """8-bit-valued random images (as decoded data are), labels and training-set rows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (b, c, size, size), generator=g).to(dtype) / 255
    y = torch.randint(0, 5, (b,), generator=g)
    return x.to(device), y.to(device), torch.arange(b, device=device)


def _policy(name, fitted, seed=0):
    m = fitted[0]
    aug = GLICOAugmenter(m, p=0.5, seed=seed) if "glico" in name else None
    return build_policy(name, num_classes=5, glico_augmenter=aug, seed=seed, image_size=16)


def _pixels_changed(out, x):
    return (out != x).flatten(1).any(1)


# --- the contract every policy keeps -------------------------------------------------------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES)
def test_every_policy_keeps_shape_dtype_range_device(name, device, fitted):
    if "glico" in name:
        m, x, y = fitted
        m.to(device)
        cases = [(x.to(device), y.to(device), torch.arange(len(x), device=device))]
    else:
        cases = [_batch(c=c, dtype=dt, device=device) for c in (1, 3) for dt in (torch.float32, torch.float64)]
    policy = _policy(name, fitted)
    for x, y, idx in cases:
        x0 = x.clone()
        out, t = policy(x, y, idx)
        assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
        assert out.min() >= 0 and out.max() <= 1
        assert t.device == y.device and t.shape[0] == x.shape[0]
        if name.rpartition("+")[2] in ("mixup", "cutmix"):  # soft targets, also after GLICO
            assert t.shape == (x.shape[0], 5) and t.is_floating_point()
        else:
            assert torch.equal(t, y) and t.dtype == torch.int64
        assert torch.equal(x, x0), "the input batch must not be modified in place"
    fitted[0].to("cpu")


def test_policy_names_are_the_cli_names():
    assert policy_names() == NAMES


def test_build_policy_types(fitted):
    expected = {
        "baseline": Standard, "cutout": Cutout, "random-erasing": RandomErasing, "autoaugment": AutoAugment,
        "randaugment": RandAugment, "trivialaugment": TrivialAugmentWide, "mixup": MixUp, "cutmix": CutMix,
        "glico": GLICOPolicy, "glico+autoaugment": Compose,
    }
    for name, cls in expected.items():
        assert type(_policy(name, fitted)) is cls
    for name in POLICIES:  # glico+NAME: GLICO's replacement first, then that policy on the batch
        both = _policy(f"glico+{name}", fitted)
        assert type(both) is Compose and isinstance(both.first, GLICOPolicy)
        assert type(both.second) is expected[name]
    assert build_policy("cutout", num_classes=3, image_size=32).size == 16
    assert build_policy("cutout", num_classes=3).size == 16
    assert build_policy("cutout", num_classes=3, image_size=8).size == 4


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as e:
        build_policy("autoagment", num_classes=10)
    for name in NAMES:
        assert name in str(e.value)


@pytest.mark.parametrize("name", ["glico", "glico+autoaugment", "glico+cutmix"])
def test_glico_names_require_an_augmenter(name):
    with pytest.raises(ValueError, match="glico_augmenter"):
        build_policy(name, num_classes=10)


@pytest.mark.parametrize(
    "name", ["cutout", "random-erasing", "autoaugment", "randaugment", "trivialaugment", "mixup", "cutmix"]
)
def test_seeded_reproducible_successive_calls_differ_global_rng_untouched(name, fitted):
    x, y, idx = _batch(b=12)
    a, b = _policy(name, fitted, seed=3), _policy(name, fitted, seed=3)
    state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a1, b1 = a(x, y, idx), b(x, y, idx)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.get_num_threads() == threads
    assert torch.equal(a1[0], b1[0]) and torch.equal(a1[1], b1[1])
    a2 = a(x, y, idx)
    assert not torch.equal(a2[0], a1[0])
    other = _policy(name, fitted, seed=4)(x, y, idx)
    assert not torch.equal(other[0], a1[0])


# --- each policy's effect ------------------------------------------------------------------------

def test_standard_is_identity():
    x, y, idx = _batch()
    out, t = Standard()(x, y, idx)
    assert out is x and t is y


def _box(mask):
    """Bounding box (r0, r1, c0, c1) of a boolean (H, W) mask, ends exclusive."""
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@pytest.mark.parametrize("c", [1, 3])
def test_cutout_zeroes_one_clipped_square_per_image_at_different_places(c):
    size, h = 4, 10
    x = torch.full((200, c, h, h), 0.5)
    out, _ = Cutout(size=size, seed=0)(x, torch.zeros(200, dtype=torch.long), torch.arange(200))
    boxes, clipped = set(), 0
    for img in out:
        hole = img == 0
        assert torch.equal(hole, hole[:1].expand_as(hole)), "the hole covers every channel alike"
        hole = hole[0]
        assert hole.any(), "p = 1: every image gets a hole"
        r0, r1, c0, c1 = _box(hole)
        assert hole.sum() == (r1 - r0) * (c1 - c0), "the hole is one filled rectangle"
        for lo, hi in ((r0, r1), (c0, c1)):
            assert hi - lo == size or (hi - lo < size and (lo == 0 or hi == h)), "shorter only where clipped"
        clipped += (r1 - r0) * (c1 - c0) < size * size
        assert torch.all(img[:, ~hole] == 0.5)
        boxes.add((r0, r1, c0, c1))
    assert len(boxes) > 30, "positions are drawn per image"
    # the centre, not a corner, is uniform: holes are clipped at every border, top and left included
    assert any(r0 == 0 and r1 - r0 < size for r0, r1, _, _ in boxes)
    assert any(c0 == 0 and c1 - c0 < size for _, _, c0, c1 in boxes)
    assert any(r1 == h and r1 - r0 < size for r0, r1, _, _ in boxes)
    # centres uniform over the 10 x 10 pixels: a 4-square is clipped unless 2 <= cy <= 8 (and cx): P = 1 - 0.49
    assert 0.35 < clipped / 200 < 0.65


def test_cutout_fill_value():
    x, y, idx = _batch(b=16, size=8)
    out, _ = Cutout(size=3, fill=1.0)(torch.zeros_like(x), y, idx)
    assert set(out.unique().tolist()) == {0.0, 1.0}
    holes = (out == 1).flatten(1).sum(1)
    assert torch.all((holes >= 2 * 2 * 3) & (holes <= 3 * 3 * 3))  # C = 3; a corner clips 3 x 3 to 2 x 2


def test_random_erasing_draws_a_box_per_image():
    b, c, h = 64, 3, 16
    x = torch.full((b, c, h, h), 0.5)
    out, _ = RandomErasing(p=1.0, seed=0)(x, torch.zeros(b, dtype=torch.long), torch.arange(b))
    boxes = set()
    for img in out:
        hole = (img == 0).all(0)
        if not hole.any():
            continue  # torchvision gives up after ten draws that do not fit
        r0, r1, c0, c1 = _box(hole)
        assert hole.sum() == (r1 - r0) * (c1 - c0)
        area = hole.sum() / (h * h)
        assert 0.0 < area <= 0.4
        boxes.add((r0, r1, c0, c1))
    assert len(boxes) > 20, "each image gets its own rectangle (torchvision's batch call would give one)"


def test_random_erasing_probability_is_per_image():
    b = 400
    x = torch.full((b, 1, 16, 16), 0.5)
    out, _ = RandomErasing(p=0.5, seed=1)(x, torch.zeros(b, dtype=torch.long), torch.arange(b))
    erased = _pixels_changed(out, x).float().mean()
    assert 0.38 < erased < 0.58  # 400 coin flips, minus the rare failed draws


@pytest.mark.parametrize("cls", [AutoAugment, RandAugment, TrivialAugmentWide])
@pytest.mark.parametrize("c", [1, 3])
def test_autoaugment_family_changes_images_per_image_keeps_labels(cls, c):
    b = 32
    x, y, idx = _batch(b=b, c=c, size=16)
    same = x[:1].expand(b, -1, -1, -1).contiguous()  # one image repeated: a batch-level draw would give one output
    out, t = cls(seed=0)(same, y, idx)
    assert torch.equal(t, y)
    changed = _pixels_changed(out, same)
    assert changed.sum() >= b // 4, "the policy changes images"
    assert len({o.numpy().tobytes() for o in out}) > b // 4, "operations are drawn per image"
    # inputs already on the 8-bit grid: unchanged images come back bit-identical, changed ones stay on the grid
    assert torch.equal(out[~changed], same[~changed])
    torch.testing.assert_close(out * 255, (out * 255).round(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("cls", [AutoAugment, TrivialAugmentWide])
def test_autoaugment_family_returns_unchanged_images_unquantised(cls):
    b = 32
    x, y, idx = _batch(b=b, size=16)
    x = (x + 0.3 / 255).clamp(0, 1)  # off the 8-bit grid, as GLICO samples are
    out, _ = cls(seed=0)(x, y, idx)
    kept = (out == x).flatten(1).all(1)
    assert 0 < kept.sum() < b, "some images are left alone by the drawn operations, some are not"
    changed = ~kept
    torch.testing.assert_close(out[changed] * 255, (out[changed] * 255).round(), rtol=0, atol=1e-4)


def test_autoaugment_family_restores_the_thread_count():
    x, y, idx = _batch(b=4)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        AutoAugment()(x, y, idx)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_autoaugment_family_refuses_other_channel_counts():
    x, y, idx = _batch(c=4)
    with pytest.raises(ValueError, match="1-channel .* or 3-channel"):
        AutoAugment()(x, y, idx)


def _mix_batch(b=12, c=3, size=8):
    """Distinct labels 0..b-1 (num_classes = b), so a target row names the partner's label."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, c, size, size, generator=g), torch.arange(b), torch.arange(b)


def _partners(t, y):
    """For each row: own weight, partner index (the other nonzero class), partner weight."""
    b = len(y)
    own = t[torch.arange(b), y]
    rest = t.clone()
    rest[torch.arange(b), y] = 0
    return own, rest.argmax(1), rest.max(1).values


def test_mixup_targets_are_soft_and_images_are_the_implied_convex_combination():
    x, y, idx = _mix_batch()
    b = len(y)
    for seed in range(5):
        out, t = MixUp(alpha=1.0, num_classes=b, seed=seed)(x, y, idx)
        assert t.shape == (b, b) and t.min() >= 0
        torch.testing.assert_close(t.sum(1), torch.ones(b))
        lam, j, rest = _partners(t, y)
        assert torch.all(j != torch.arange(b)) and torch.all(rest > 0)
        assert sorted(j.tolist()) == list(range(b)), "partners are a permutation of the batch"
        torch.testing.assert_close(lam, torch.full_like(lam, float(lam[0])))  # one λ per batch
        expected = lam[:, None, None, None] * x + rest[:, None, None, None] * x[j]
        torch.testing.assert_close(out, expected)


def test_cutmix_pastes_the_partner_in_a_box_weighted_by_area():
    x, y, idx = _mix_batch(size=16)
    b, hw = len(y), 16 * 16
    for seed in range(5):
        out, t = CutMix(alpha=1.0, num_classes=b, seed=seed)(x, y, idx)
        torch.testing.assert_close(t.sum(1), torch.ones(b))
        lam, j, rest = _partners(t, y)
        from_own = (out == x).all(1)
        from_partner = (out == x[j]).all(1)
        assert torch.all(from_own | from_partner), "every pixel is the image's own or its partner's"
        frac = (from_partner & ~from_own).flatten(1).float().mean(1)
        torch.testing.assert_close(frac, rest, atol=0.5 / hw, rtol=0)
        if rest[0] > 0:
            r0, r1, c0, c1 = _box(from_partner[0] & ~from_own[0])
            assert (r1 - r0) * (c1 - c0) == round(float(rest[0]) * hw), "the pasted region is one box"


def test_glico_policy_replaces_about_p_and_keeps_labels(fitted):
    m, x, y = fitted
    big, labels = x.repeat(50, 1, 1, 1), y.repeat(50)
    idx = torch.arange(len(x)).repeat(50)
    out, t = GLICOPolicy(GLICOAugmenter(m, p=0.5, seed=0))(big, labels, idx)
    assert t is labels
    replaced = _pixels_changed(out, big).float().mean()
    assert 0.4 < replaced < 0.6  # 600 coin flips: 5 sigma ~ 0.1
    out0, _ = GLICOPolicy(GLICOAugmenter(m, p=0.0))(big, labels, idx)
    assert torch.equal(out0, big)


def test_compose_applies_glico_then_autoaugment(fitted):
    m, x, y = fitted
    idx = torch.arange(len(x))
    glico_only, _ = GLICOPolicy(GLICOAugmenter(m, p=1.0, seed=0))(x, y, idx)
    out, t = Compose(GLICOPolicy(GLICOAugmenter(m, p=1.0, seed=0)), AutoAugment(seed=0))(x, y, idx)
    assert torch.equal(t, y)
    expected, _ = AutoAugment(seed=0)(glico_only, y, idx)
    torch.testing.assert_close(out, expected)


def test_policy_then_glico_leaves_the_synthetic_images_unaugmented(fitted):
    # autoaugment+glico: AutoAugment on the real batch, then GLICO's replacement. Kept rows are
    # AutoAugment's images, replaced rows GLICO's samples as GLICO alone (same seed) makes them.
    m, x, y = fitted
    big, labels, idx = x.repeat(6, 1, 1, 1), y.repeat(6), torch.arange(len(x)).repeat(6)
    out, t = build_policy("autoaugment+glico", num_classes=5, glico_augmenter=GLICOAugmenter(m, p=0.5, seed=3),
                          seed=0)(big, labels, idx)
    assert torch.equal(t, labels)
    aa, _ = AutoAugment(seed=0)(big, labels, idx)
    glico_only, _ = GLICOPolicy(GLICOAugmenter(m, p=0.5, seed=3))(big, labels, idx)
    replaced = _pixels_changed(glico_only, big)
    assert 0 < int(replaced.sum()) < len(big)
    torch.testing.assert_close(out[replaced], glico_only[replaced])
    torch.testing.assert_close(out[~replaced], aa[~replaced])
    assert "mixup+glico" not in policy_names() and "cutmix+glico" not in policy_names()


def test_compose_passes_soft_targets_on():
    x, y, idx = _mix_batch()
    out, t = Compose(MixUp(num_classes=12), Cutout(size=2))(x, y, idx)
    assert t.shape == (12, 12)
    out2, t2 = Compose(Cutout(size=2), MixUp(num_classes=12))(x, y, idx)
    assert t2.shape == (12, 12)


# --- the loss ------------------------------------------------------------------------------------

def test_soft_cross_entropy_matches_cross_entropy_hard_and_one_hot(gen):
    logits = torch.randn(8, 5, generator=gen)
    y = torch.randint(0, 5, (8,), generator=gen)
    ref = F.cross_entropy(logits, y)
    torch.testing.assert_close(soft_cross_entropy(logits, y), ref)
    torch.testing.assert_close(soft_cross_entropy(logits, F.one_hot(y, 5).float()), ref)


def test_soft_cross_entropy_soft_targets_and_gradient(gen):
    logits = torch.randn(8, 5, generator=gen, requires_grad=True)
    t = torch.softmax(torch.randn(8, 5, generator=gen), 1)
    loss = soft_cross_entropy(logits, t)
    torch.testing.assert_close(loss, -(t * logits.log_softmax(1)).sum(1).mean())
    loss.backward()
    # d/dlogits of the mean soft CE is (softmax - t) / B
    torch.testing.assert_close(logits.grad, (logits.softmax(1) - t).detach() / 8)


def test_soft_cross_entropy_refuses_bad_targets(gen):
    logits = torch.randn(4, 3, generator=gen)
    with pytest.raises(ValueError, match="shape"):
        soft_cross_entropy(logits, torch.full((4, 5), 0.2))
    with pytest.raises(TypeError, match="integer"):
        soft_cross_entropy(logits, torch.zeros(4))
