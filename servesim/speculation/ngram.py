"""N-gram (prompt lookup) proposals: no GPU drafting, all-or-nothing acceptance.

The proposer looks the last few tokens up in the request's context and proposes the
``num_speculative_tokens`` that followed them there; it runs on the CPU between steps,
charged as a ``draft`` stage of ``propose_time_s`` per step (vLLM's proposer is a
compiled lookup over the batch, tens of microseconds). Acceptance:
:class:`servesim.speculation.acceptance.NgramAcceptance`.

Cost assumption, stated: every sequence's verify is costed at the full width (vLLM
verifies only the drafts of sequences that found a match, so this overstates the verify
cost where matches are rare).
"""

from __future__ import annotations

from servesim.costmodel import fixed_time_cost
from servesim.speculation.base import Speculator


class NgramSpeculation(Speculator):
    method = "ngram"
    verify_kind = "chain_verify"
    draft_depends_on_context = False

    def __init__(self, acceptance, num_speculative_tokens: int, propose_time_s: float) -> None:
        self.acceptance = acceptance
        self.tokens_per_step = num_speculative_tokens + 1
        self.propose_time_s = propose_time_s
        self.has_draft_stage = propose_time_s > 0

    def draft_cost(self, cost_model, batch: int, context_tokens: int, length: int | None = None):
        if not self.has_draft_stage or length == 0:
            return None
        return fixed_time_cost("ngram_propose", self.propose_time_s)
