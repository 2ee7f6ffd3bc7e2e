"""Speculation methods: how many tokens a verify step yields, and what drafting costs.

A speculator answers three questions for the engine:

* ``tokens_per_step``: query tokens per sequence in a verify step (the candidate tokens
  N, root included; 1 means plain autoregressive decoding);
* ``draw_accepted(rng, n)``: tokens each of ``n`` sequences gets from one verify step
  (always >= 1: the root's token is always correct);
* ``fixed_tokens_per_step``: the tokens every verify step yields when that is certain
  (plain decoding: 1; Medusa with fixed acceptance), else ``None``: the engine then
  needs no draws and knows at admission at which iteration a request finishes;
* ``has_draft_stage``: whether an iteration runs a drafting stage before verifying;
* ``draft_depends_on_context``: whether that stage's cost depends on the context (a
  draft model attends to it; Medusa heads see one hidden state per sequence), so that
  the engine may look it up once per batch size;
* ``draft_cost(cost_model, batch, context_tokens)``: that stage's cost (``None`` if
  there is none).

Acceptance models in this module:

``FixedAcceptance``
    every verify step yields exactly ``k`` tokens (for checks and what-ifs).
``TruncatedGeometricAcceptance``
    the number of tokens A of a verify step is ``min(K, G)`` with ``G`` geometric on
    {1, 2, ...}: P(A >= j) = q^(j-1) for j = 1..K. Each further token is accepted with
    the same probability q given the previous one was, up to K = tree depth + 1. Its
    mean is (1 - q^K) / (1 - q); q is solved from a target mean. This is how the
    Medusa reference acceptance-rate curve becomes a per-step random draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from servesim.catalog import medusa_acceptance_curve


def truncated_geometric_mean(q: float, max_tokens: int) -> float:
    """Mean of min(K, G), G ~ Geometric(1 - q) on {1, 2, ...}: sum_{j<K} q^j."""
    if q >= 1.0:
        return float(max_tokens)
    return (1.0 - q ** max_tokens) / (1.0 - q)


def solve_continue_probability(mean: float, max_tokens: int) -> float:
    """The q whose truncated geometric on {1..max_tokens} has the given mean (bisection)."""
    if not 1.0 <= mean <= max_tokens:
        raise ValueError(f"mean tokens per step {mean} must lie in [1, {max_tokens}]")
    if mean == max_tokens:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if truncated_geometric_mean(mid, max_tokens) < mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class FixedAcceptance:
    """Every verify step yields exactly ``tokens`` tokens per sequence."""

    tokens: int

    @property
    def mean(self) -> float:
        return float(self.tokens)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.tokens, dtype=np.int64)


@dataclass(frozen=True)
class TruncatedGeometricAcceptance:
    """Tokens per verify step = min(max_tokens, Geometric(1 - q)); see module docstring."""

    continue_probability: float
    max_tokens: int

    @classmethod
    def with_mean(cls, mean: float, max_tokens: int) -> "TruncatedGeometricAcceptance":
        return cls(solve_continue_probability(mean, max_tokens), max_tokens)

    @property
    def mean(self) -> float:
        return truncated_geometric_mean(self.continue_probability, self.max_tokens)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        q = self.continue_probability
        if q <= 0.0:
            return np.ones(n, dtype=np.int64)
        if q >= 1.0:
            return np.full(n, self.max_tokens, dtype=np.int64)
        return np.minimum(rng.geometric(1.0 - q, size=n), self.max_tokens)


def acceptance_curve(source: str) -> dict[int, float]:
    """Mean tokens per verify step by candidate tokens.

    ``source`` is ``"medusa-sim"`` (the bundled curve of the Medusa paper's simulation)
    or a CSV file with columns ``candidate_tokens,acceptance_rate``.
    """
    if source == "medusa-sim":
        return medusa_acceptance_curve()
    from servesim.inputs import read_acceptance_curve
    return read_acceptance_curve(source)


def interpolate_curve(curve: dict[int, float], candidate_tokens: int) -> float:
    """The curve's value at ``candidate_tokens``, linear between its points."""
    xs = sorted(curve)
    if not xs[0] <= candidate_tokens <= xs[-1]:
        raise ValueError(f"candidate_tokens {candidate_tokens} is outside the acceptance "
                         f"curve's range {xs[0]}..{xs[-1]}")
    return float(np.interp(candidate_tokens, xs, [curve[x] for x in xs]))


@dataclass(frozen=True)
class ChainAcceptance:
    """A drafted chain: token i is accepted with probability ``alphas[i]`` given tokens
    before it were, and the target adds one token of its own. Tokens per step = 1 + the
    accepted prefix; mean 1 + sum_j prod_{i<=j} alphas[i]."""

    alphas: tuple[float, ...]

    @property
    def max_tokens(self) -> int:
        return len(self.alphas) + 1

    @property
    def mean(self) -> float:
        return float(1.0 + np.cumprod(self.alphas).sum())

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        accepted = rng.random((n, len(self.alphas))) < np.asarray(self.alphas)
        return 1 + np.cumprod(accepted, axis=1).sum(axis=1)


class NoSpeculation:
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

    def draft_cost(self, cost_model, batch: int, context_tokens: int):
        return None


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


def default_max_accepted(candidate_tokens: int, num_heads: int) -> int:
    """Most tokens one verify step can yield: root + one per head, and no more than the
    tree's tokens."""
    return min(candidate_tokens, num_heads + 1)


