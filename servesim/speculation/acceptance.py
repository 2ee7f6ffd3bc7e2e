"""Acceptance models: how many tokens a verify step yields per sequence.

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


