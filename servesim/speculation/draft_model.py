"""A separate draft model proposing a chain of tokens."""

from __future__ import annotations

import numpy as np

from servesim.speculation.acceptance import ChainAcceptance, TruncatedGeometricAcceptance


class DraftModelSpeculation:
    """A small draft model proposes a chain of ``gamma`` tokens, one forward pass each,
    on the same GPU; the target verifies the ``gamma + 1`` positions in one causal step.

    Each drafted token is accepted with probability ``alpha`` given the previous one was
    (Leviathan et al. 2023), and the target adds one token of its own, so a step yields
    min(gamma + 1, G) tokens, G geometric on {1, 2, ...} with continue-probability
    alpha: mean (1 - alpha^(gamma+1)) / (1 - alpha). The draft model's own prefill is
    not charged (small next to the target's).
    """

    method = "draft_model"
    verify_kind = "chain_verify"
    fixed_tokens_per_step = None
    has_draft_stage = True
    draft_depends_on_context = True

    def __init__(self, draft_cost_model, gamma: int, alpha: float,
                 alpha_per_position: tuple[float, ...] = ()) -> None:
        self.draft_cost_model = draft_cost_model
        self.gamma = gamma
        self.tokens_per_step = gamma + 1
        if alpha_per_position:
            self.acceptance = ChainAcceptance(tuple(alpha_per_position))
        else:
            self.acceptance = TruncatedGeometricAcceptance(alpha, gamma + 1)

    def draw_accepted(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.acceptance.draw(rng, n)

    def draft_cost(self, cost_model, batch: int, context_tokens: int):
        return self.draft_cost_model.draft_chain_cost(batch, self.gamma, context_tokens)
