"""What every speculator shares: speculation lengths, verify widths, expected tokens.

A speculator's **length** k is how many tokens deep it drafts in a step: a chain's
drafted tokens, a tree's depth (0 = speculation off: a plain decode step). A step of
length k yields min(A, k + 1) tokens, A drawn for the speculator's longest length K
(see :mod:`servesim.speculation.acceptance`), verifies ``width(k)`` query tokens per
sequence and drafts for ``draft_cost(..., k)``. Length policies
(:mod:`servesim.speculation.policy`) choose k per step.
"""

from __future__ import annotations

import numpy as np


class Speculator:
    """Defaults for a speculator whose acceptance model has a survival vector.

    Subclasses set ``method``, ``tokens_per_step`` (the verify width at the longest
    length), ``verify_kind``, ``has_draft_stage``, ``draft_depends_on_context`` and
    ``acceptance``, and implement ``draft_cost(cost_model, batch, context_tokens,
    length)`` and, for trees, ``width``.
    """

    method = "speculator"
    fixed_tokens_per_step: int | None = None
    per_request = None
    """``RequestLevels`` or ``AcceptanceReplay`` when acceptance varies between
    requests; None when every request draws from ``acceptance`` alike."""

    def draw_accepted(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return self.acceptance.draw(rng, n)

    def survival(self) -> np.ndarray:
        return np.asarray(self.acceptance.survival(), dtype=float)

    @property
    def max_length(self) -> int:
        """K: the most drafted tokens one step can accept."""
        return len(self.survival()) - 1

    def lengths(self) -> tuple[int, ...]:
        """The lengths a policy may choose from (0 = off)."""
        return tuple(range(self.max_length + 1))

    def width(self, length: int) -> int:
        """Query tokens per sequence of a verify step at ``length`` (a chain: length + 1)."""
        return 1 if length == 0 else (self.tokens_per_step if length >= self.max_length else length + 1)

    def drafted_tokens(self, length: int) -> int:
        """Tokens drafted per sequence at ``length`` (the verify width less the root)."""
        return self.width(length) - 1

    def expected_tokens(self, length: int | None = None) -> float:
        """Mean tokens per step at ``length`` (default the longest): sum of S[0..length]."""
        s = self.survival()
        return float(s.sum() if length is None else s[:length + 1].sum())

    def kind(self, length: int) -> str:
        """The cost model's stage of a verify step at ``length``."""
        return "decode" if length == 0 else self.verify_kind
