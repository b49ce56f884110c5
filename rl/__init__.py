"""Variational policy gradient (Xu 2018) on top of :mod:`vi_flows`.

The policy-parameter posterior p(θ) ∝ exp(R(θ)/α) (Eq. 3) is fitted with any vi_flows flow through
the surrogate log-density built in :mod:`rl.adapter`; :mod:`rl.cli` is the ``vi-rl`` command.
"""
