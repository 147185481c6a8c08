"""A class-conditional DCGAN baseline: the generative comparison of the GLICO paper.

Fig. 1 of Azuri & Weinshall compares GLICO with a conditional DCGAN trained on the same small labelled
sample and sampled per class. This module is that baseline: a DCGAN (Radford et al., 2016: the
architecture, the N(0, 0.02) initialisation and Adam with lr 2e-4, betas (0.5, 0.999)) conditioned as
Mirza & Osindero (2014) do, by concatenating the one-hot label to the generator's noise and, as
constant label planes, to the discriminator's input image. The fitted generator can then serve as an
augmentation (:class:`CDCGANPolicy`: each example replaced with probability p by a sample of its own
class, the protocol GLICO's own replacement follows).

Images are in the library's [0, 1] range everywhere: the generator ends in a sigmoid, and the
discriminator takes [0, 1] images and maps them to [-1, 1] itself (the range DCGAN discriminators are
usually trained on); no caller ever sees [-1, 1].

Determinism: on the CPU, two fits with the same inputs and config give bit-identical generators (the
weights, the batch order and the noise each have their own seeded stream; the global RNG is left as it
was). On GPUs, cuDNN's convolution algorithms may make runs differ in the last bits.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from glico._checks import check_images, check_labels
from glico._progress import progress
from glico._rng import substream
from glico.experiments.policies import _check_batch
from glico.generators.dcgan import DCGANGenerator, check_image_size, dcgan_init

__all__ = [
    "CDCGANConfig",
    "ConditionalGenerator",
    "ConditionalDiscriminator",
    "fit_cdcgan",
    "sample_cdcgan",
    "CDCGANPolicy",
]

# The widest layer of both networks: DCGANGenerator's default cap, so that the discriminator mirrors it.
_MAX_WIDTH = 512


def _whole(v: object, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


@dataclass(frozen=True)
class CDCGANConfig:
    """Settings of a conditional DCGAN fit (defaults: Radford et al.'s DCGAN recipe).

    Args:
        steps: training steps; each is one discriminator update, then one generator update.
        batch_size: real examples per step (capped at the number of images).
        lr: Adam learning rate, for both networks.
        betas: Adam's (beta1, beta2), for both networks.
        noise_dim: length of the generator's noise vector (the one-hot label is appended to it).
        base_width: channels of the generator's last hidden layer and of the discriminator's first;
            widths double towards the 4x4 layer (capped at 512).
        seed: seeds the weights, the batch order and the noise.
        device: where to train (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...).
        progress: show a progress bar over the steps.
    """

    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    noise_dim: int = 100
    base_width: int = 64
    seed: int = 0
    device: str = "cpu"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "noise_dim", "base_width"):
            value = getattr(self, name)
            if not _whole(value, 1):
                raise ValueError(f"{name} must be a whole number >= 1; got {value!r}")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number; got {self.lr!r}")
        betas = tuple(self.betas) if isinstance(self.betas, (tuple, list)) else None
        if (betas is None or len(betas) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"betas must be two numbers (beta1, beta2), each in [0, 1); got {self.betas!r}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))
        if not _whole(self.seed, 0):
            raise ValueError(f"seed must be a whole number >= 0; got {self.seed!r}")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a device name such as 'cpu' or 'cuda'; got {self.device!r}")
        try:
            torch.device(self.device)
        except RuntimeError as err:
            raise ValueError(f"device must be a device name such as 'cpu', 'cuda' or 'cuda:1'; got {self.device!r}") from err
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress must be True or False; got {self.progress!r}")


def _check_image_shape(image_shape: object) -> tuple[int, int, int]:
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, torch.Size)) else None
    if shape is None or len(shape) != 3 or not all(_whole(s, 1) for s in shape):
        raise ValueError(f"image_shape must be (C, H, W), three positive whole numbers; got {image_shape!r}")
    c, h, w = shape
    if h != w:
        raise ValueError(f"DCGAN networks handle square images only; got image_shape (C, H, W) = {shape}")
    check_image_size(h)
    return c, h, w


def _check_labels_tensor(labels: object, b: int | None = None) -> Tensor:
    """Shape and dtype of a batch of hard labels (no host synchronisation)."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a tensor of class indices (B,); got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must hold integer class indices; got dtype {labels.dtype}")
    if labels.dim() != 1 or (b is not None and labels.shape[0] != b):
        want = f"(B,) with B = {b}" if b is not None else "(B,)"
        raise ValueError(f"labels must have shape {want}; got {tuple(labels.shape)}")
    return labels


def _check_label_values(labels: Tensor, num_classes: int, full: bool) -> None:
    """Labels must lie in [0, num_classes): a clear error when ``full`` (a host sync), else a device-side
    assert (no sync; on the CPU the check is always full, it costs nothing to wait there)."""
    if not labels.numel():
        return
    if full or labels.device.type == "cpu":
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(f"labels must be classes in 0..{num_classes - 1}; got values in {lo}..{hi}")
    else:
        torch._assert_async(((labels >= 0) & (labels < num_classes)).all())


def _one_hot(labels: Tensor, num_classes: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    # A comparison rather than F.one_hot, which reads the labels' maximum on the host.
    labels = labels.to(device)
    return (labels[:, None] == torch.arange(num_classes, device=device)).to(dtype)


class ConditionalGenerator(nn.Module):
    """A class-conditional DCGAN generator: :class:`glico.generators.dcgan.DCGANGenerator` fed the
    noise with the one-hot label appended (Mirza & Osindero's conditioning).

    Args:
        num_classes: number of classes K.
        image_shape: (C, H, W) of the images made; square, with a side that is a power of two in [8, 256].
        noise_dim: length of the noise vector.
        base_width: channels before the output layer (widths double towards the 4x4 projection, capped at 512).

    Shape:
        z (B, noise_dim), labels (B,) int -> images (B, C, H, W), values in [0, 1].
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int] = (3, 32, 32),
                 noise_dim: int = 100, base_width: int = 64) -> None:
        super().__init__()
        if not _whole(num_classes, 1):
            raise ValueError(f"num_classes must be a whole number >= 1; got {num_classes!r}")
        if not _whole(noise_dim, 1) or not _whole(base_width, 1):
            raise ValueError(f"noise_dim and base_width must be whole numbers >= 1; got {noise_dim!r}, {base_width!r}")
        c, h, w = _check_image_shape(image_shape)
        self.num_classes, self.noise_dim, self.image_shape = int(num_classes), int(noise_dim), (c, h, w)
        self.net = DCGANGenerator(in_dim=noise_dim + num_classes, image_size=h, channels=c,
                                  base_width=base_width, max_width=max(_MAX_WIDTH, base_width))

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        """Generate images of the given classes.

        Args:
            z: noise, one row per image (standard normal in training).
            labels: each image's class, in 0..num_classes-1 (int; moved to ``z``'s device).

        Returns:
            Images in [0, 1].

        Shape:
            z (B, noise_dim), labels (B,) -> (B, C, H, W)
        """
        if not isinstance(z, Tensor) or z.dim() != 2 or z.shape[1] != self.noise_dim:
            got = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"z must have shape (B, {self.noise_dim}); got {got}")
        _check_labels_tensor(labels, z.shape[0])
        _check_label_values(labels, self.num_classes, full=False)
        return self.net(torch.cat([z, _one_hot(labels, self.num_classes, z.dtype, z.device)], dim=1))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, noise_dim={self.noise_dim}, image_shape={self.image_shape}"


class ConditionalDiscriminator(nn.Module):
    """A class-conditional DCGAN discriminator.

    The label enters as ``num_classes`` extra input planes, the one-hot label constant over the image
    (Mirza & Osindero's conditioning). Then stride-2 4x4 convolutions halve the side down to 4x4, with
    widths ``base_width, 2*base_width, ...`` (capped at 512: the generator's widths in reverse),
    LeakyReLU(0.2) after each and BatchNorm after all but the first; a last 4x4 convolution gives one
    logit. Images come in the library's [0, 1] range and are mapped to [-1, 1] inside ``forward``.

    Args:
        num_classes: number of classes K.
        image_shape: (C, H, W) of the images judged; square, side a power of two in [8, 256].
        base_width: channels of the first convolution.

    Shape:
        images (B, C, H, W) in [0, 1], labels (B,) int -> logits (B,) (positive: judged real).
    """

    def __init__(self, num_classes: int, image_shape: tuple[int, int, int] = (3, 32, 32), base_width: int = 64) -> None:
        super().__init__()
        if not _whole(num_classes, 1):
            raise ValueError(f"num_classes must be a whole number >= 1; got {num_classes!r}")
        if not _whole(base_width, 1):
            raise ValueError(f"base_width must be a whole number >= 1; got {base_width!r}")
        c, h, w = _check_image_shape(image_shape)
        self.num_classes, self.image_shape = int(num_classes), (c, h, w)
        n_down = int(math.log2(h // 4))
        widths = [min(base_width * 2 ** k, max(_MAX_WIDTH, base_width)) for k in range(n_down)]
        # The first convolution has no BatchNorm (Radford et al.), so it keeps a bias; the others don't need one.
        layers: list[nn.Module] = [nn.Conv2d(c + num_classes, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out), nn.LeakyReLU(0.2, inplace=True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0)]
        self.net = nn.Sequential(*layers)
        dcgan_init(self)

    def forward(self, images: Tensor, labels: Tensor) -> Tensor:
        """Score images as real (positive logit) or generated, given their claimed class.

        Args:
            images: images in [0, 1] (mapped to [-1, 1] here).
            labels: each image's class, in 0..num_classes-1 (int; moved to the images' device).

        Returns:
            One logit per image.

        Shape:
            images (B, C, H, W), labels (B,) -> (B,)
        """
        if not isinstance(images, Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != self.image_shape:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must have shape (B, {', '.join(map(str, self.image_shape))}); got {got}")
        b, _, h, w = images.shape
        _check_labels_tensor(labels, b)
        _check_label_values(labels, self.num_classes, full=False)
        planes = _one_hot(labels, self.num_classes, images.dtype, images.device)[:, :, None, None].expand(b, -1, h, w)
        return self.net(torch.cat([images * 2 - 1, planes], dim=1)).view(b)


def _module_device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def fit_cdcgan(images: Tensor, labels: Tensor, config: CDCGANConfig = CDCGANConfig(),
               num_classes: int | None = None) -> tuple[ConditionalGenerator, dict]:
    """Train a class-conditional DCGAN on a labelled sample.

    Each step draws a batch of real examples (without replacement within an epoch: a fresh permutation
    every pass, the incomplete tail of a pass left out so that every batch has ``batch_size`` examples),
    generates as many images of the same classes, then updates the discriminator once (real -> 1,
    generated -> 0) and the generator once (generated -> 1: the non-saturating loss), both with
    binary cross-entropy on logits and Adam.

    Args:
        images: the training images, float in [0, 1]; square, side a power of two in [8, 256].
        labels: each image's class, int, every class in 0..max present.
        config: the training settings.
        num_classes: number of classes K (default ``labels.max() + 1``; larger values leave the extra
            classes untrained).

    Returns:
        ``(generator, info)``: the :class:`ConditionalGenerator` in eval mode on ``config.device``, and
        ``{"seconds", "steps", "d_loss_last", "g_loss_last"}`` (the last step's losses).

    Shape:
        images (N, C, H, W), labels (N,)
    """
    if not isinstance(config, CDCGANConfig):
        raise TypeError(f"config must be a CDCGANConfig; got {type(config).__name__}")
    images = check_images(images, "images")
    labels = check_labels(labels, images.shape[0], "labels")
    k_min = int(labels.max()) + 1
    if num_classes is None:
        num_classes = k_min
    elif not _whole(num_classes, k_min):
        raise ValueError(f"num_classes must be a whole number >= labels.max() + 1 = {k_min}; got {num_classes!r}")
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config.device is {config.device!r} but CUDA is not available here; use device='cpu'")
    image_shape = tuple(images.shape[1:])
    n = images.shape[0]
    batch = min(config.batch_size, n)

    # Weights from torch's global generator, seeded, inside fork_rng: the caller's global state is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        gen = ConditionalGenerator(num_classes, image_shape, config.noise_dim, config.base_width)
        disc = ConditionalDiscriminator(num_classes, image_shape, config.base_width)
    gen, disc = gen.to(device).train(), disc.to(device).train()
    opt_g = torch.optim.Adam(gen.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr, betas=config.betas)
    order = torch.Generator().manual_seed(substream(config.seed, 0))
    noise = torch.Generator(device=device).manual_seed(substream(config.seed, 1))
    x, y = images.to(device, torch.float32), labels.to(device)
    ones = torch.ones(batch, device=device)
    zeros = torch.zeros(batch, device=device)

    start = time.perf_counter()
    perm, pos = torch.randperm(n, generator=order), 0
    loss_d = loss_g = torch.zeros(())
    for _ in progress(range(config.steps), desc="cDCGAN", disable=not config.progress, leave=False):
        if pos + batch > n:
            perm, pos = torch.randperm(n, generator=order), 0
        rows = perm[pos:pos + batch].to(device)
        pos += batch
        real, cls = x[rows], y[rows]
        z = torch.randn(batch, config.noise_dim, generator=noise, device=device)
        fake = gen(z, cls)

        opt_d.zero_grad(set_to_none=True)
        loss_d = (F.binary_cross_entropy_with_logits(disc(real, cls), ones)
                  + F.binary_cross_entropy_with_logits(disc(fake.detach(), cls), zeros))
        loss_d.backward()
        opt_d.step()

        opt_g.zero_grad(set_to_none=True)
        loss_g = F.binary_cross_entropy_with_logits(disc(fake, cls), ones)
        loss_g.backward()
        opt_g.step()

    info = {"seconds": round(time.perf_counter() - start, 2), "steps": config.steps,
            "d_loss_last": round(float(loss_d.detach()), 4), "g_loss_last": round(float(loss_g.detach()), 4)}
    return gen.eval(), info


def _sample(generator: ConditionalGenerator, labels: Tensor, gen: torch.Generator | None, full_check: bool) -> Tensor:
    _check_labels_tensor(labels)
    _check_label_values(labels, generator.num_classes, full=full_check)
    device = _module_device(generator)
    if gen is not None and torch.device(gen.device).type != device.type:
        raise ValueError(f"gen must be a torch.Generator on the generator's device ({device}); got one on {gen.device}")
    z = torch.randn(labels.shape[0], generator.noise_dim, generator=gen, device=device)
    was_training = generator.training
    generator.eval()
    try:
        return generator(z, labels.to(device))
    finally:
        generator.train(was_training)


@torch.no_grad()
def sample_cdcgan(generator: ConditionalGenerator, labels: Tensor, gen: torch.Generator | None = None) -> Tensor:
    """Draw images of the given classes from a fitted conditional generator.

    The noise is standard normal, drawn from ``gen`` (torch's default generator of the device when
    ``None``); the generator runs in eval mode (BatchNorm's running statistics) and is left in the mode
    it was in.

    Args:
        generator: a :class:`ConditionalGenerator` (from :func:`fit_cdcgan`).
        labels: the class of each image wanted, in 0..num_classes-1, on any device.
        gen: the noise's random stream, on the generator's device.

    Returns:
        Images in [0, 1], float32, on the generator's device.

    Shape:
        labels (B,) -> (B, C, H, W)
    """
    if not isinstance(generator, ConditionalGenerator):
        raise TypeError(f"generator must be a ConditionalGenerator; got {type(generator).__name__}")
    return _sample(generator, labels, gen, full_check=True)


class CDCGANPolicy:
    """A batch policy (:class:`glico.experiments.policies.BatchPolicy`) that replaces each example, with
    probability ``p``, by a conditional-DCGAN sample of its own class (the replacement protocol of
    GLICO's own augmentation, here with the Fig. 1 baseline's generator).

    The coins are drawn on the host, one per example, from a torch generator seeded with ``seed``; the
    noise of the replacements from a second one seeded ``seed + 1`` on the generator's device, for the
    replaced examples only. Labels pass through: a replacement has its example's class, so hard labels
    stay right. Soft targets ``(B, K)`` are refused (put MixUp / CutMix after this policy).

    Args:
        generator: a fitted :class:`ConditionalGenerator` (:func:`fit_cdcgan`).
        p: probability that an example is replaced, in [0, 1].
        seed: seeds the coins (``seed``) and the noise (``seed + 1``).

    Shape:
        images (B, C, H, W) in [0, 1], labels (B,), idx (B,) -> images (B, C, H, W) in [0, 1], labels (B,).
    """

    def __init__(self, generator: ConditionalGenerator, p: float = 0.5, seed: int = 0) -> None:
        if not isinstance(generator, ConditionalGenerator):
            raise TypeError(f"generator must be a ConditionalGenerator (from fit_cdcgan); got {type(generator).__name__}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a whole number >= 0; got {seed!r}")
        self.generator, self.p, self.seed = generator, float(p), seed
        self._coins = torch.Generator().manual_seed(seed)
        self._noise = torch.Generator(device=_module_device(generator)).manual_seed(seed + 1)

    @torch.no_grad()
    def __call__(self, images: Tensor, labels: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Augment a batch.

        Args:
            images: the batch, float in [0, 1], of the generator's image shape.
            labels: each example's class (int64, hard labels).
            idx: each example's row in the training set (unused: a sample depends on the class only).

        Returns:
            ``(images, labels)``: the batch with the replaced rows generated (same shape, dtype and
            device; the same tensor when no row is replaced), and the labels unchanged.

        Shape:
            images (B, C, H, W), labels (B,), idx (B,) -> (B, C, H, W), (B,)
        """
        _check_batch(images, labels, idx)
        if labels.dim() == 2:
            raise ValueError(f"CDCGANPolicy takes hard labels (B,), not soft targets (B, K) = {tuple(labels.shape)}; "
                             f"apply MixUp / CutMix after it, not before")
        _check_labels_tensor(labels, images.shape[0])
        if tuple(images.shape[1:]) != self.generator.image_shape:
            raise ValueError(f"images must have the generator's shape (B, {', '.join(map(str, self.generator.image_shape))}); "
                             f"got {tuple(images.shape)}")
        chosen = (torch.rand(images.shape[0], generator=self._coins) < self.p).nonzero().squeeze(1)
        if chosen.numel() == 0:
            return images, labels
        sel = chosen.to(images.device)
        synth = _sample(self.generator, labels[sel], self._noise, full_check=False)
        return images.index_copy(0, sel, synth.to(images.device, images.dtype)), labels

    def state_dict(self) -> dict[str, Tensor]:
        """The two random streams' states (coins and noise): all the next call's draws depend on, so that
        a resumed training continues them exactly (:func:`glico.experiments.policies.policy_state`)."""
        return {"coins": self._coins.get_state(), "noise": self._noise.get_state()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Continue from :meth:`state_dict`: the next call draws what the saved policy's next call would."""
        if (not isinstance(state, dict) or set(state) != {"coins", "noise"}
                or not all(isinstance(v, Tensor) and v.dtype == torch.uint8 for v in state.values())):
            raise ValueError(f"CDCGANPolicy state must be {{'coins': ByteTensor, 'noise': ByteTensor}} "
                             f"(from CDCGANPolicy.state_dict()); got {state!r}")
        self._coins.set_state(state["coins"].cpu())
        self._noise.set_state(state["noise"].cpu())

    def __repr__(self) -> str:
        return f"CDCGANPolicy(num_classes={self.generator.num_classes}, p={self.p}, seed={self.seed})"
