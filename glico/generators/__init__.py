"""Generators: map codes (with noise) to images in [0, 1]."""
from glico.generators.base import Generator
from glico.generators.dcgan import DCGANGenerator, check_image_size

__all__ = ["Generator", "DCGANGenerator", "check_image_size"]
