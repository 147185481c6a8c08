"""Latent codes: the per-image code table on the unit sphere and its initialisers."""
from glico.latents.init import CodeInitializer, FeatureInit, HypercubeInit, PCAInit, RandomSphere
from glico.latents.optim import SphereRowAdam
from glico.latents.table import CodeTable

__all__ = ["CodeTable", "CodeInitializer", "RandomSphere", "HypercubeInit", "PCAInit", "FeatureInit", "SphereRowAdam"]
