"""EAGLE (EAGLE-1/2) and EAGLE-3: a one-layer draft head run once per tree depth.

Acceptance: per depth d and rank r, the probability that the target's token at depth d
is the draft's r-th choice given the tokens before it were accepted (a table in the
head-accuracy format, depth for head), or per-position rates for a chain (top-1 only;
vLLM's EAGLE). A tree's acceptance is then that of a Medusa tree of the same paths
(:mod:`servesim.speculation.trees`): 1 + the sum of the nodes' path probabilities.

Trees: a chain of ``num_speculative_tokens`` (``eagle_topk = 1``, vLLM's default); a
static tree (``tree_paths``), drafted level by level; or EAGLE-2's dynamic tree
(``eagle_topk > 1``: ``num_speculative_tokens`` passes, each expanding the top-k nodes
of the last level by their top-k children, the best ``candidate_tokens - 1`` verified;
:func:`servesim.speculation.trees.dynamic_tree`). Since confidence is taken as the
acceptance table's path probability, the dynamic tree is the same in every step: the
per-context adaptation EAGLE-2 gains from is not modelled beyond what
``acceptance_spread`` gives.
"""

from __future__ import annotations

from servesim.speculation.base import Speculator
from servesim.speculation.draft_head import DraftHead


class EagleSpeculation(Speculator):
    """EAGLE-family drafting over a tree (a chain is a tree of one path).

    acceptance: a ``TreeAcceptance`` (trees) or a ``ChainAcceptance`` (chains).
    pass_widths: tokens each draft pass expands per sequence (pass 1: the root).
    """

    verify_kind = "verify"
    has_draft_stage = True
    draft_depends_on_context = True

    def __init__(self, method: str, head: DraftHead, acceptance, pass_widths: tuple[int, ...],
                 verify_widths: tuple[int, ...]) -> None:
        self.method = method
        self.head = head
        self.acceptance = acceptance
        self.pass_widths = tuple(pass_widths)
        self._widths = tuple(verify_widths)  # verify width at length 0, 1, ..., K
        self.tokens_per_step = self._widths[-1]
        if all(w == 1 for w in self.pass_widths):
            self.verify_kind = "chain_verify"  # a chain: causal attention, no tree mask

    def width(self, length: int) -> int:
        return self._widths[min(length, len(self._widths) - 1)]

    def draft_cost(self, cost_model, batch: int, context_tokens: int, length: int | None = None):
        passes = self.pass_widths if length is None else self.pass_widths[:length]
        if not passes:
            return None
        return self.head.cost(batch, passes, context_tokens)


def tree_shape(tree: list[tuple[int, ...]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(pass widths, verify widths by length) of a tree drafted level by level: pass t
    expands the nodes of depth t - 1 that have children (the root first)."""
    depth = max((len(p) for p in tree), default=0)
    parents = [0] * depth
    nodes = [0] * (depth + 1)
    parent_set = {p[:-1] for p in tree}
    for p in parent_set:
        parents[len(p)] += 1
    for p in tree:
        nodes[len(p)] += 1
    widths = [1]
    for d in range(1, depth + 1):
        widths.append(widths[-1] + nodes[d])
    return tuple(parents), tuple(widths)
