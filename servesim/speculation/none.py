"""Plain autoregressive decoding: the baseline arm."""

from __future__ import annotations

import numpy as np

from servesim.speculation.acceptance import FixedAcceptance
from servesim.speculation.base import Speculator


class NoSpeculation(Speculator):
    """Plain autoregressive decoding: one token per step, no drafting."""

    method = "none"
    tokens_per_step = 1
    verify_kind = "decode"
    fixed_tokens_per_step = 1
    has_draft_stage = False
    draft_depends_on_context = False
    acceptance = FixedAcceptance(1)

    def draw_accepted(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.ones(n, dtype=np.int64)

    def draft_cost(self, cost_model, batch: int, context_tokens: int, length: int | None = None):
        return None
