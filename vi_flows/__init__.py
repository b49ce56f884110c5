"""vi-flows: normalizing-flow variational inference by explicit KL minimization.

Fit q_φ = h_φ # N(0, I) to an unnormalized log-density by minimizing KL(q_φ‖p) (Xu 2018, Eq. 2).
"""
