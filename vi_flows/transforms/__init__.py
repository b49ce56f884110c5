"""Invertible transforms θ = h(ξ) with exact log-determinants.

Every class exported here is covered by the generic tests in ``tests/test_transforms.py``; a
meta-test fails when one is added without a case.
"""

from vi_flows.transforms.affine import ElementwiseAffine, LowerTriangularAffine, LowRankAffine
from vi_flows.transforms.base import Compose, Inverse, Transform
from vi_flows.transforms.coupling import AffineCoupling, Permutation, Reverse
from vi_flows.transforms.external import NflowsTransform, PyroTransform
from vi_flows.transforms.planar import Planar, Radial

__all__ = [
    "Transform",
    "Compose",
    "Inverse",
    "ElementwiseAffine",
    "LowerTriangularAffine",
    "LowRankAffine",
    "Planar",
    "Radial",
    "AffineCoupling",
    "Permutation",
    "Reverse",
    "NflowsTransform",
    "PyroTransform",
]
