"""glico: learn a generator from a few labelled images per class (GLICO, Azuri & Weinshall) and use
its samples to augment classifier training.

Images are float tensors in [0, 1], shape (N, C, H, W); codes are (N, d) with unit L2 norm.

- :class:`GLICO`: the model (fit it with :func:`glico.training.fit`, augment with
  :class:`glico.augment.GLICOAugmenter`).
- :func:`train_final_classifier`, :func:`load_classifier`, :class:`TrainedClassifier`: the classifier a user
  keeps (``glico train`` / ``glico predict`` / ``glico export``; :mod:`glico.classify`).
"""
__version__ = "0.4.0"

from glico.model import GLICO  # noqa: E402

__all__ = ["GLICO", "TrainedClassifier", "__version__", "load_classifier", "train_final_classifier"]

_LAZY = {"TrainedClassifier", "load_classifier", "train_final_classifier"}


def __getattr__(name: str):
    # The classifier API pulls in the experiments (torchvision's transforms); loaded on first use only.
    if name in _LAZY:
        from glico import classify

        return getattr(classify, name)
    raise AttributeError(f"module 'glico' has no attribute {name!r}")
