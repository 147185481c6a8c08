"""Independent random streams from one user seed.

Two draws seeded with the same integer read the same stream: seeding an augmenter's coin flips and its
partner draw both with ``seed`` would make the partner a function of the coin (replaced examples have
u < p, so only the first p-fraction of each class would ever be a partner). Every consumer of a seed
therefore takes its own stream, ``substream(seed, k)``.
"""
from __future__ import annotations

_MASK64 = (1 << 64) - 1


def substream(seed: int, k: int) -> int:
    """The seed of stream ``k`` derived from ``seed``: the SplitMix64 finaliser of ``seed`` plus ``k + 1``
    golden-ratio increments, shifted to 63 bits (a valid seed for torch generators and the Triton sampler).

    Different ``(seed, k)`` give unrelated seeds (the finaliser is a bijection of 64-bit integers with full
    avalanche), so streams neither coincide nor overlap in practice.
    """
    z = (int(seed) + (int(k) + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) >> 1
