"""Laplace whitening; kept as a name for :mod:`vi_flows.precondition`, where it now lives."""

from vi_flows.precondition import Whitened, laplace

__all__ = ["Whitened", "laplace"]
