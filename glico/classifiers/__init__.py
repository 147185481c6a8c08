"""Classifiers for GLICO's conditional term and for downstream training, and their losses.

- :class:`WeakCNN`: the paper's weak 4-conv f (default), also the fast CPU downstream classifier.
- :class:`WideResNet`: WRN-depth-k, CIFAR variant (downstream WRN-28-10).
- :class:`ResNet50`, :class:`VGG19`: torchvision backbones (random, torchvision weights enum, or local file).
- :class:`LatentMLP`: the 3-layer "latent classifier" on the codes (``consumes_codes = True``).
- :class:`CrossEntropy`, :class:`CosineLoss`: per-sample class losses.
- :class:`CosineEmbeddingClassifier`: Barz & Denzler's cosine-loss classifier around any network (downstream).

Image classifiers take (B, C, H, W) images with values in [0, 1] and return raw logits (B, num_classes).
"""
from .base import Classifier, ClassLoss
from .cosine_embedding import CosineEmbeddingClassifier
from .latent_mlp import LatentMLP
from .losses import CosineLoss, CrossEntropy
from .torchvision_models import ResNet50, VGG19, load_torchvision_weights
from .weak_cnn import WeakCNN
from .wide_resnet import WideResNet

__all__ = [
    "Classifier",
    "ClassLoss",
    "WeakCNN",
    "WideResNet",
    "ResNet50",
    "VGG19",
    "LatentMLP",
    "CrossEntropy",
    "CosineLoss",
    "CosineEmbeddingClassifier",
    "load_torchvision_weights",
]
