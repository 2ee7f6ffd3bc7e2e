"""A separate draft model proposing a chain of tokens."""

from __future__ import annotations

from servesim.costmodel import fixed_time_cost
from servesim.speculation.acceptance import ChainAcceptance, TruncatedGeometricAcceptance
from servesim.speculation.base import Speculator


class DraftModelSpeculation(Speculator):
    """A small draft model proposes a chain of ``gamma`` tokens, one forward pass each,
    on the same GPU; the target verifies the ``gamma + 1`` positions in one causal step.

    Each drafted token is accepted with probability ``alpha`` given the previous one was
    (Leviathan et al. 2023), and the target adds one token of its own, so a step yields
    min(gamma + 1, G) tokens, G geometric on {1, 2, ...} with continue-probability
    alpha: mean (1 - alpha^(gamma+1)) / (1 - alpha). The draft model's own prefill is
    not charged (small next to the target's).

    ``draft_cost_ratio`` c > 0 replaces the draft model's roofline cost by Leviathan's
    cost coefficient: each draft pass takes c x the target's decode step at the same
    batch and context, so that a published ratio can be set exactly.
    """

    method = "draft_model"
    verify_kind = "chain_verify"
    has_draft_stage = True
    draft_depends_on_context = True

    def __init__(self, draft_cost_model, gamma: int, alpha: float,
                 alpha_per_position: tuple[float, ...] = (), draft_cost_ratio: float = 0.0) -> None:
        self.draft_cost_model = draft_cost_model
        self.gamma = gamma
        self.tokens_per_step = gamma + 1
        self.draft_cost_ratio = draft_cost_ratio
        if alpha_per_position:
            self.acceptance = ChainAcceptance(tuple(alpha_per_position))
        else:
            self.acceptance = TruncatedGeometricAcceptance(alpha, gamma + 1)

    def draft_cost(self, cost_model, batch: int, context_tokens: int, length: int | None = None):
        passes = self.gamma if length is None else length
        if passes == 0:
            return None
        if self.draft_cost_ratio > 0:
            step = cost_model.step_cost(batch, 1, context_tokens, "decode").time_s
            return fixed_time_cost("draft_model", passes * self.draft_cost_ratio * step)
        return self.draft_cost_model.draft_chain_cost(batch, passes, context_tokens)
