"""Medusa heads verified as a token tree."""

from __future__ import annotations

import numpy as np

from servesim.speculation.acceptance import FixedAcceptance


class MedusaSpeculation:
    """Medusa: ``num_heads`` extra decoding heads propose a tree of candidate tokens that
    the target model verifies in one step of ``candidate_tokens`` query tokens per
    sequence under a tree attention mask.

    With ``candidate_tokens == 1`` there is no tree and no head to run: the step is a
    plain decode step, so this arm equals the baseline exactly.
    """

    method = "medusa"
    draft_depends_on_context = False  # the heads' cost depends on the batch only

    def __init__(self, candidate_tokens: int, acceptance, num_heads: int = 5,
                 include_head_cost: bool = True) -> None:
        self.tokens_per_step = candidate_tokens
        self.acceptance = acceptance
        self.num_heads = num_heads
        self.include_head_cost = include_head_cost
        self.verify_kind = "decode" if candidate_tokens == 1 else "verify"
        self.has_draft_stage = include_head_cost and candidate_tokens > 1
        self.fixed_tokens_per_step = acceptance.tokens if isinstance(acceptance, FixedAcceptance) else None

    def draw_accepted(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.acceptance.draw(rng, n)

    def draft_cost(self, cost_model, batch: int, context_tokens: int):
        if not self.has_draft_stage:
            return None
        return cost_model.medusa_heads_cost(batch, self.num_heads)


def default_max_accepted(candidate_tokens: int, num_heads: int) -> int:
    """Most tokens one verify step can yield: root + one per head, and no more than the
    tree's tokens."""
    return min(candidate_tokens, num_heads + 1)
