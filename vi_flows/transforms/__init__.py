"""Invertible transforms θ = h(ξ) with exact log-determinants.

Every class exported here is covered by the generic tests in ``tests/test_transforms.py``; a
meta-test fails when one is added without a case. The adapters ``NflowsTransform`` and
``PyroTransform`` import their libraries only when used.
"""

from vi_flows.transforms.affine import ElementwiseAffine, LowerTriangularAffine, LowRankAffine
from vi_flows.transforms.autoregressive import MaskedAutoregressive
from vi_flows.transforms.base import Compose, Inverse, Transform
from vi_flows.transforms.coupling import (
    AffineCoupling,
    Coupling,
    Permutation,
    Reverse,
    SplineCoupling,
)
from vi_flows.transforms.external import NflowsTransform, PyroTransform
from vi_flows.transforms.made import MADE
from vi_flows.transforms.planar import Planar, Radial
from vi_flows.transforms.splines import ElementwiseSpline, RQSpline
from vi_flows.transforms.transformers import AffineTransformer, Transformer

__all__ = [
    "Transform",
    "Compose",
    "Inverse",
    "ElementwiseAffine",
    "LowerTriangularAffine",
    "LowRankAffine",
    "Planar",
    "Radial",
    "Coupling",
    "AffineCoupling",
    "SplineCoupling",
    "Permutation",
    "Reverse",
    "MADE",
    "MaskedAutoregressive",
    "ElementwiseSpline",
    "RQSpline",
    "AffineTransformer",
    "Transformer",
    "NflowsTransform",
    "PyroTransform",
]
