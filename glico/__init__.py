"""glico: learn a generator from a few labelled images per class (GLICO, Azuri & Weinshall) and use
its samples to augment classifier training.

Images are float tensors in [0, 1], shape (N, C, H, W); codes are (N, d) with unit L2 norm.
"""
__version__ = "0.4.0"

from glico.model import GLICO  # noqa: E402

__all__ = ["GLICO", "__version__"]
