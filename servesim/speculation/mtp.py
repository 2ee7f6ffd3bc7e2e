"""MTP: multi-token-prediction modules (DeepSeek-V3 style) as the drafter.

``mtp_modules`` modules, each one transformer block at the target's width and a 2 x
hidden -> hidden projection, share the target's lm_head; module j drafts the j-th token
of a chain (a step drafts ``num_speculative_tokens``; beyond the last module the last
one is run again, as vLLM does). Acceptance per position (a chain). The cost is that
of :class:`servesim.speculation.draft_head.DraftHead` with one token per pass.
"""

from __future__ import annotations

from servesim.speculation.base import Speculator
from servesim.speculation.draft_head import DraftHead


class MTPSpeculation(Speculator):
    method = "mtp"
    verify_kind = "chain_verify"
    has_draft_stage = True
    draft_depends_on_context = True

    def __init__(self, head: DraftHead, acceptance, num_speculative_tokens: int, modules: int) -> None:
        self.head = head
        self.acceptance = acceptance
        self.modules = modules
        self.tokens_per_step = num_speculative_tokens + 1

    def draft_cost(self, cost_model, batch: int, context_tokens: int, length: int | None = None):
        passes = self.tokens_per_step - 1 if length is None else length
        if passes == 0:
            return None
        return self.head.cost(batch, (1,) * passes, context_tokens)
