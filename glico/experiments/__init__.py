"""Experiments: downstream classifier training, augmentation policies, FID, and ``glico evaluate``."""
from glico.experiments.downstream import TrainConfig, evaluate, steps_for, train_classifier
from glico.experiments.fid import InceptionFeatures, feature_statistics, fid, frechet_distance
from glico.experiments.policies import BatchPolicy, build_policy, policy_names, soft_cross_entropy

__all__ = [
    "TrainConfig",
    "train_classifier",
    "evaluate",
    "steps_for",
    "BatchPolicy",
    "build_policy",
    "policy_names",
    "soft_cross_entropy",
    "InceptionFeatures",
    "feature_statistics",
    "fid",
    "frechet_distance",
]
