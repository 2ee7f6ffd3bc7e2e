"""Medusa heads verified as a token tree."""

from __future__ import annotations

from servesim.speculation.acceptance import FixedAcceptance
from servesim.speculation.base import Speculator


class MedusaSpeculation(Speculator):
    """Medusa: ``num_heads`` extra decoding heads propose a tree of candidate tokens that
    the target model verifies in one step of ``candidate_tokens`` query tokens per
    sequence under a tree attention mask.

    With ``candidate_tokens == 1`` there is no tree and no head to run: the step is a
    plain decode step, so this arm equals the baseline exactly.

    Shorter lengths (a length policy): a tree (``acceptance = "tree"``) is cut to its
    nodes of depth <= k, verified with that many tokens, drafted by its first k heads;
    an acceptance curve has no tree to cut, so it runs at full length or off.
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
        per_depth = getattr(acceptance, "nodes_per_depth", None)
        self._widths = None
        if per_depth is not None:
            self._widths = [1 + sum(per_depth()[:k]) for k in range(len(per_depth()) + 1)]

    def lengths(self) -> tuple[int, ...]:
        return tuple(range(self.max_length + 1)) if self._widths else tuple(sorted({0, self.max_length}))

    def width(self, length: int) -> int:
        if self._widths is not None:
            return self._widths[min(length, len(self._widths) - 1)]
        return 1 if length == 0 else self.tokens_per_step

    def draft_cost(self, cost_model, batch: int, context_tokens: int, length: int | None = None):
        if not self.has_draft_stage or length == 0:
            return None
        heads = self.num_heads if length is None or self._widths is None else min(length, self.num_heads)
        return cost_model.medusa_heads_cost(batch, heads)


def default_max_accepted(candidate_tokens: int, num_heads: int) -> int:
    """Most tokens one verify step can yield: root + one per head, and no more than the
    tree's tokens."""
    return min(candidate_tokens, num_heads + 1)
