"""The GLICO composer: per-image codes, a generator and a weak classifier, composed from parts.

    model = GLICO(image_shape=(3, 32, 32), num_classes=10)           # the paper's choices
    model = GLICO(image_shape=(1, 8, 8), num_classes=10,
                  loss=LaplacianPyramidLoss(), interpolator=Lerp())  # a variant

Every argument left out gets the paper's default (d = 128, ε concatenated to z, VGG-16 perceptual
loss, weak 4-conv CNN with cross-entropy, slerp, random init on the sphere). The fit loop lives in
:mod:`glico.training`; this module holds the parts, the codes, and what is computed from them.
Images are float tensors in [0, 1], shape (N, C, H, W), everywhere.
"""
from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

import kernels
from glico._checks import check_images, check_labels
from glico.classifiers import Classifier, ClassLoss, CrossEntropy, WeakCNN
from glico.generators import DCGANGenerator, Generator, check_image_size
from glico.interpolation import PAPER_T_VALUES, Interpolator, Slerp, check_t_values
from glico.latents import CodeInitializer, CodeTable, RandomSphere
from glico.losses import PerceptualLoss, ReconstructionLoss
from glico.noise import ConcatNoise, NoisePolicy

log = logging.getLogger(__name__)

UNLABELED = -1


class _Default:
    """Marks an argument that was left out (so ``None`` can mean "none")."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()


@dataclass(frozen=True)
class StepLosses:
    """Losses of one fit step (tensors, so reading them needs no host sync until logged)."""

    total: torch.Tensor
    reconstruction: torch.Tensor
    classification: torch.Tensor


class GLICO(nn.Module):
    """Generative Latent Implicit Conditional Optimization, composed from component instances.

    Args:
        image_shape: (C, H, W) of the images; H = W must be a power of two in [8, 256] for the
            default generator.
        num_classes: number of classes C; labels are 0..C-1.
        code_dim: d, the length of each code (paper: 128).
        generator: maps generator inputs (B, noise.out_dim(d)) to images. Default: DCGAN.
        loss: reconstruction loss. Default: VGG-16 perceptual loss with ImageNet weights (raises an
            actionable error when those cannot be had; pass LaplacianPyramidLoss() or
            PerceptualLoss(weights=None) to work offline).
        noise: how ε enters the generator input. Default: ConcatNoise().
        interpolator: Slerp() (default) or Lerp().
        classifier: the weak classifier f for the conditional term. Default: WeakCNN. ``None``: no
            classifier (plain GLO; the paper's "No Classifier" ablation).
        class_loss: CE (default) or CosineLoss.
        init: code initialiser. Default: RandomSphere().
        gamma: weight γ of the classification term in L = L_rec + γ·L_cls. The paper's Algorithm 1
            has γ but gives no value; 0.1 is this library's choice (the reconstruction term stays the
            main objective). Every other default above is the paper's choice unless it says otherwise.
        t_values: the set t is drawn from when sampling (paper: 0.1, 0.2, 0.3, 0.4).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        *,
        code_dim: int = 128,
        generator: Generator | Any = DEFAULT,
        loss: ReconstructionLoss | Any = DEFAULT,
        noise: NoisePolicy | Any = DEFAULT,
        interpolator: Interpolator | Any = DEFAULT,
        classifier: Classifier | None | Any = DEFAULT,
        class_loss: ClassLoss | Any = DEFAULT,
        init: CodeInitializer | Any = DEFAULT,
        gamma: float = 0.1,
        t_values: Sequence[float] = PAPER_T_VALUES,
    ) -> None:
        super().__init__()
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W) with positive entries; got {image_shape}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1; got {num_classes}")
        if code_dim < 1:
            raise ValueError(f"code_dim must be >= 1; got {code_dim}")
        if not (math.isfinite(float(gamma)) and float(gamma) >= 0):
            raise ValueError(f"gamma (the weight of the classification term) must be a finite number >= 0; got {gamma}")
        c, h, w = image_shape
        self.image_shape = (int(c), int(h), int(w))
        self.num_classes = int(num_classes)
        self.code_dim = int(code_dim)
        self.gamma = float(gamma)
        self.t_values = check_t_values(t_values)
        self.noise = ConcatNoise() if noise is DEFAULT else noise
        self.interpolator = Slerp() if interpolator is DEFAULT else interpolator
        self.init = RandomSphere() if init is DEFAULT else init
        if generator is DEFAULT:
            if h != w:
                raise ValueError(f"the default DCGAN generator makes square images; got H={h}, W={w}")
            check_image_size(h)
            generator = DCGANGenerator(self.noise.out_dim(code_dim), image_size=h, channels=c)
        self.generator = generator
        _require(generator, "generator", ("image_shape", "in_dim"),
                 "a generator module with image_shape (C, H, W) and in_dim, the input length it takes "
                 "(see docs/architecture.md)")
        if tuple(generator.image_shape) != self.image_shape:
            raise ValueError(f"generator makes images of shape {generator.image_shape}, but image_shape is {self.image_shape}")
        if generator.in_dim != self.noise.out_dim(code_dim):
            raise ValueError(
                f"generator takes inputs of length {generator.in_dim}, but {self.noise!r} makes inputs of length "
                f"{self.noise.out_dim(code_dim)} from codes of length {code_dim}"
            )
        self.loss = PerceptualLoss() if loss is DEFAULT else loss
        _require(self.loss, "loss", ("prepare_target", "forward_prepared"),
                 "a reconstruction loss: subclass glico.losses.ReconstructionLossBase and write forward_prepared(pred, "
                 "target) returning one loss per image (see docs/losses.md)")
        if classifier is DEFAULT:
            classifier = WeakCNN(in_channels=c, num_classes=num_classes, image_size=h)
        if classifier is not None:
            _require(classifier, "classifier", ("consumes_codes",),
                     "a classifier module with consumes_codes (False: it classifies generated images, True: codes)")
            k = getattr(classifier, "num_classes", None)
            if k is not None and int(k) != self.num_classes:
                raise ValueError(f"classifier has num_classes={k}, but the model has num_classes={self.num_classes}")
        self.classifier = classifier
        self.class_loss = CrossEntropy() if class_loss is DEFAULT else class_loss
        self.codes: CodeTable | None = None
        self.register_buffer("labels", torch.empty(0, dtype=torch.long))
        self._index: kernels.ClassIndex | None = None

    # ---------------------------------------------------------------- codes
    def init_codes(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> None:
        """Create the code table for these images (labels -1 = unlabelled) with the initialiser.

        Shape:
            images (N, C, H, W), labels (N,)
        """
        codes = self.init(images.cpu(), labels.cpu(), self.code_dim, generator)
        if codes.shape != (images.shape[0], self.code_dim):
            raise ValueError(f"{self.init!r} returned codes of shape {tuple(codes.shape)}; expected {(images.shape[0], self.code_dim)}")
        self.codes = CodeTable(codes).to(self.labels.device)
        self.labels = labels.to(self.labels.device)
        self._index = None

    @property
    def class_index(self) -> kernels.ClassIndex:
        """The labelled codes grouped by class (for partner draws)."""
        if self._index is None or self._index.labels.device != self.labels.device:
            self._index = kernels.class_index(self._labelled_labels())
        return self._index

    def _labelled_labels(self) -> torch.Tensor:
        # Unlabelled codes never serve as anchors or partners: give them their own (unused) classes
        # after the real ones so the class index stays a plain sorted index.
        lab = self.labels.clone()
        unl = lab < 0
        lab[unl] = self.num_classes + torch.arange(int(unl.sum()), device=lab.device)
        return lab

    def _require_fitted(self) -> CodeTable:
        if self.codes is None:
            raise RuntimeError("this GLICO model has no codes yet: call fit() (or load a checkpoint) first")
        return self.codes

    # ---------------------------------------------------------------- one step
    def step_losses(self, images: torch.Tensor, idx: torch.Tensor, noise_generator: torch.Generator | None = None,
                    prepared_target: object | None = None) -> StepLosses:
        """The fit objective on one batch: L = L_rec + γ·L_cls (L_cls on labelled rows only).

        Args:
            images: the targets, rows ``idx`` of the training set, in [0, 1].
            idx: rows of the code table.
            noise_generator: source of ε.
            prepared_target: ``loss.prepare_target(images)`` when cached by the caller.

        Shape:
            images (B, C, H, W), idx (B,)
        """
        codes = self._require_fitted()
        z = codes(idx)
        fake = self.generator(self.noise(z, generator=noise_generator))
        if prepared_target is None:
            prepared_target = self.loss.prepare_target(images)
        per_image = self.loss.forward_prepared(fake, prepared_target)
        if per_image.shape != idx.shape:
            raise ValueError(f"{type(self.loss).__name__} returned shape {tuple(per_image.shape)}; a reconstruction "
                             f"loss returns one value per image ({tuple(idx.shape)})")
        rec = per_image.mean()
        cls = torch.zeros((), device=rec.device)
        if self.classifier is not None and self.gamma != 0.0:
            y = self.labels[idx]
            lab = y >= 0
            inputs = z if self.classifier.consumes_codes else fake
            logits = self.classifier(inputs)
            if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                raise ValueError(f"classifier returned logits of shape {tuple(logits.shape)}; expected (B, {self.num_classes})")
            # Masked mean rather than boolean indexing: no host sync, same value.
            per = self.class_loss(logits, y.clamp_min(0))
            if per.shape != y.shape:
                raise ValueError(f"class_loss returned shape {tuple(per.shape)}; it must return one loss per example "
                                 f"({tuple(y.shape)}), e.g. nn.CrossEntropyLoss(reduction='none') or "
                                 f"glico.classifiers.CrossEntropy(), so that unlabelled rows can be left out")
            cls = (per * lab).sum() / lab.sum().clamp_min(1)
        return StepLosses(rec + self.gamma * cls, rec, cls)

    # ---------------------------------------------------------------- generation
    def generator_inputs(self, codes: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        g = None
        if seed is not None:
            g = torch.Generator(device=codes.device)
            g.manual_seed(seed)
        return self.noise(codes, generator=g)

    @torch.no_grad()
    def reconstruct(self, idx: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
        """Generator output for the codes of training images ``idx`` (all when None).

        Returns:
            images (B, C, H, W) in [0, 1].
        """
        codes = self._require_fitted()
        if idx is None:
            idx = torch.arange(codes.num_codes, device=codes.weight.device)
        with self._eval_generator() as generator:
            return generator(self.generator_inputs(codes.weight[idx.to(codes.weight.device)], seed))

    @torch.no_grad()
    def sample_from(self, idx: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """New images, one per anchor row ``idx``: slerp (or the chosen interpolation) between the
        anchor's code and a random same-class partner's, t from ``t_values``, noise, generator.

        Shape:
            idx (B,) -> (B, C, H, W) in [0, 1]
        """
        codes = self._require_fitted()
        idx = idx.to(codes.weight.device)
        if bool((self.labels[idx] < 0).any()):
            raise ValueError("sample_from needs labelled anchors; some rows of idx are unlabelled (transductive) codes")
        inputs = self.interpolator.sample_inputs(codes.weight.detach(), idx, self.class_index, self.t_values, self.noise, seed)
        with self._eval_generator() as generator:
            return generator(inputs)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor | Sequence[int], seed: int = 0) -> torch.Tensor:
        """New images of the given classes: for each requested label a random anchor of that class,
        then as :meth:`sample_from`.

        Args:
            labels: class of each image to make, in 0..num_classes-1.
            seed: makes the draw reproducible.

        Returns:
            images (B, C, H, W) in [0, 1].
        """
        self._require_fitted()
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.labels.device)
        if labels.dim() != 1:
            raise ValueError(f"labels must be a 1-D sequence of class indices; got shape {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"labels must be in 0..{self.num_classes - 1}; got values from {int(labels.min())} to {int(labels.max())}")
        index = self.class_index
        counts = (index.offsets[1:] - index.offsets[:-1])[labels]
        g = torch.Generator(device=self.labels.device)
        g.manual_seed(seed)
        pick = (torch.rand(labels.shape, generator=g, device=labels.device) * counts).long()
        anchors = index.order[index.offsets[labels] + pick]
        return self.sample_from(anchors, seed=seed + 1)

    @torch.no_grad()
    def interpolate(self, i: int, j: int, steps: int = 8, seed: int = 0) -> torch.Tensor:
        """Images along the interpolation from training image i's code to image j's (t = 0 … 1).

        Returns:
            images (steps, C, H, W) in [0, 1].
        """
        codes = self._require_fitted().weight.detach()
        t = torch.linspace(0, 1, steps, device=codes.device)
        z = self.interpolator(codes[i].expand(steps, -1), codes[j].expand(steps, -1), t)
        # The same ε (same seed) for every point of the path, so only the code moves.
        inputs = torch.cat([self.generator_inputs(z[k : k + 1], seed) for k in range(steps)])
        with self._eval_generator() as generator:
            return generator(inputs)

    @contextmanager
    def _eval_generator(self):
        """The generator in eval mode (no batch statistics), its train/eval mode restored afterwards,
        also when it raises. Every method that makes images (here and in :class:`glico.augment.GLICOAugmenter`)
        runs it through this."""
        generator = self.generator
        was = generator.training
        generator.eval()
        try:
            yield generator
        finally:
            generator.train(was)

    # ---------------------------------------------------------------- convenience
    def fit(self, images: torch.Tensor, labels: torch.Tensor, unlabeled: torch.Tensor | None = None,
            **config: Any) -> "GLICO":
        """Fit codes, generator and classifier on a small labelled set (see :func:`glico.training.fit`)."""
        from glico.training import FitConfig, fit

        fit(self, images, labels, unlabeled=unlabeled, config=FitConfig(**config))
        return self

    def check_training_data(self, images: torch.Tensor, labels: torch.Tensor, unlabeled: torch.Tensor | None):
        """Validate fit inputs against this composition; returns (images, labels, unlabeled)."""
        check_images(images, "images")
        labels = check_labels(labels, images.shape[0], "labels")
        if int(labels.max()) + 1 != self.num_classes:
            raise ValueError(f"labels use classes 0..{int(labels.max())}, but the model was built for num_classes={self.num_classes}")
        if tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images have shape (C, H, W) = {tuple(images.shape[1:])}, but the model was built for {self.image_shape}")
        if unlabeled is not None:
            check_images(unlabeled, "unlabeled")
            if tuple(unlabeled.shape[1:]) != self.image_shape:
                raise ValueError(f"unlabeled images have shape {tuple(unlabeled.shape[1:])}; expected {self.image_shape}")
        return images, labels, unlabeled

    def composition(self) -> dict[str, str]:
        """A plain description of the parts (recorded in checkpoints)."""
        return {
            "image_shape": str(self.image_shape),
            "num_classes": str(self.num_classes),
            "code_dim": str(self.code_dim),
            "generator": type(self.generator).__name__,
            "loss": type(self.loss).__name__,
            "noise": _describe(self.noise),
            "interpolator": _describe(self.interpolator),
            "classifier": type(self.classifier).__name__ if self.classifier is not None else "None",
            "class_loss": type(self.class_loss).__name__,
            "gamma": str(self.gamma),
            "t_values": str(self.t_values),
        }

    # ---------------------------------------------------------------- persistence
    def save(self, path, extra: dict[str, Any] | None = None):
        """Write the learned state (generator, classifier, codes, labels) and the composition to
        ``path`` atomically. See :mod:`glico.checkpoint`."""
        from glico.checkpoint import save_checkpoint

        self._require_fitted()
        return save_checkpoint(path, self, extra)

    @classmethod
    def from_run(cls, run, device: str | torch.device = "cpu", full_loss: bool = False) -> "GLICO":
        """The fitted model of a ``glico fit`` run folder (composition from its checkpoint's spec).

        ``GLICO.from_run("runs/mine").sample([0, 1])``. The reconstruction loss is a pixel loss unless
        ``full_loss=True`` (:func:`glico.checkpoint.load_run`, which also returns run.json's data).
        """
        from glico.checkpoint import load_run

        return load_run(run, device=device, full_loss=full_loss)[0]

    def load(self, path) -> dict[str, Any]:
        """Load a checkpoint written by :meth:`save` into this model (which must be composed of the
        same parts; otherwise a ValueError says what differs). Returns the checkpoint's ``extra``."""
        from glico.checkpoint import check_composition, load_model_state, read_checkpoint

        payload = read_checkpoint(path)
        check_composition(payload, self, path)
        load_model_state(self, payload["model"])
        return payload["extra"]


def _describe(part: Any) -> str:
    """A part's repr when its class defines one (ConcatNoise(dim=32, sigma=0.1)), else its class name:
    object's default repr holds a memory address, which would make every checkpoint unloadable."""
    return repr(part) if type(part).__repr__ is not object.__repr__ else type(part).__qualname__ + "()"


def _require(part: Any, role: str, attributes: Sequence[str], what: str) -> None:
    """Refuse at construction a part that lacks what the fit will use (instead of an AttributeError there)."""
    missing = [a for a in attributes if not hasattr(part, a)]
    if missing:
        raise TypeError(f"{role} {type(part).__name__} has no {', '.join(missing)}; expected {what}")
