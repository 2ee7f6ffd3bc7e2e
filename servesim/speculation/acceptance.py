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
``ChainAcceptance``
    a drafted chain with a conditional acceptance probability per position.
``NgramAcceptance``
    prompt lookup: a step finds a match with some probability, and then each drafted
    token is accepted with a conditional probability per position; no match, nothing
    drafted: all or nothing.
Medusa and EAGLE trees: :class:`servesim.speculation.trees.TreeAcceptance`.

Every model has a **survival vector** ``survival()``: S[j] = P(A >= j + 1) for
j = 0..K (S[0] = 1; K = most drafted tokens a step can accept), from which its mean
is sum S, its mean at a shorter speculation length k is sum S[:k+1] (drafting fewer
tokens accepts min(A, k + 1): a chain's or a tree's accepted prefix does not depend on
what is drafted after it), and its conditional acceptance per position is
c[j] = S[j] / S[j - 1].

**Between-request spread** (:class:`RequestLevels`, ``speculation.acceptance_spread``):
each request draws its own acceptance level a_i ~ Beta with mean c[1] (the first drafted
token's acceptance rate) and standard deviation ``spread``; all of that request's
conditional probabilities are c_i[j] = min(1, c[j] x a_i / c[1]). For a single-rate
chain (draft model with ``alpha``) a_i is exactly the request's per-token rate. With
spread 0 every request has the model as it is. A step's tokens are then drawn from the
request's own survival vector by inversion of one uniform draw.

**Replay** (:class:`AcceptanceReplay`): every request takes the accepted lengths of a
measured request, step by step.
"""

from __future__ import annotations

import math
from bisect import bisect_left
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

    def survival(self) -> np.ndarray:
        return np.ones(self.tokens)

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

    def survival(self) -> np.ndarray:
        return self.continue_probability ** np.arange(self.max_tokens, dtype=float)

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

    def survival(self) -> np.ndarray:
        return np.concatenate(([1.0], np.cumprod(self.alphas)))

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        accepted = rng.random((n, len(self.alphas))) < np.asarray(self.alphas)
        return 1 + np.cumprod(accepted, axis=1).sum(axis=1)




def draw_from_survival(survival: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Tokens per step by inversion: A = 1 + #{j >= 1: S[j] > u}, for uniforms ``u``.
    P(A >= j + 1) = P(u < S[j]) = S[j], as the survival vector says."""
    return 1 + (np.asarray(u)[:, None] < np.asarray(survival)[None, 1:]).sum(axis=1)


@dataclass(frozen=True)
class NgramAcceptance:
    """Prompt lookup (n-gram) proposals: with probability ``match_probability`` the
    step finds the current suffix earlier in the context and drafts ``len(conditional)``
    tokens that follow it; drafted token j is accepted with probability
    ``conditional[j]`` given the ones before it were. Without a match nothing is
    drafted and the step yields the target's own token only. So
    P(A = 1) = (1 - p) + p (1 - c1) and P(A = k + 1) = p c1 ... ck: all or nothing."""

    match_probability: float
    conditional: tuple[float, ...]

    @property
    def max_tokens(self) -> int:
        return len(self.conditional) + 1

    def survival(self) -> np.ndarray:
        return np.concatenate(([1.0], self.match_probability * np.cumprod(self.conditional)))

    @property
    def mean(self) -> float:
        return float(self.survival().sum())

    def histogram(self) -> np.ndarray:
        """P(A = j + 1) for j = 0..k."""
        s = self.survival()
        return s - np.append(s[1:], 0.0)

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return draw_from_survival(self.survival(), rng.random(n))


def conditional_rates(survival: np.ndarray) -> np.ndarray:
    """c[j] = S[j] / S[j - 1] for j = 1..K (0 where S[j - 1] is 0)."""
    s = np.asarray(survival, dtype=float)
    prev = s[:-1]
    return np.divide(s[1:], prev, out=np.zeros(len(s) - 1), where=prev > 0)


def beta_parameters(mean: float, sd: float) -> tuple[float, float]:
    """(a, b) of the Beta distribution with this mean and standard deviation; ValueError
    if none exists (sd^2 must be below mean (1 - mean))."""
    var = sd * sd
    if not 0.0 < mean < 1.0 or not 0.0 < var < mean * (1.0 - mean):
        raise ValueError(f"no Beta distribution has mean {mean:.4g} and standard deviation {sd:.4g} "
                         f"(the standard deviation must be below sqrt(mean (1 - mean)) = "
                         f"{math.sqrt(max(mean * (1 - mean), 0.0)):.4g})")
    k = mean * (1.0 - mean) / var - 1.0
    return mean * k, (1.0 - mean) * k


class RequestLevels:
    """Per-request acceptance (see module docstring): ``draw_level(rng)`` gives a new
    request's survival thresholds; ``tokens(thresholds, u)`` one step's tokens."""

    def __init__(self, survival: np.ndarray, spread: float) -> None:
        self.survival = np.asarray(survival, dtype=float)
        self.conditional = conditional_rates(self.survival)
        self.spread = spread
        c1 = float(self.conditional[0]) if len(self.conditional) else 0.0
        self.c1 = c1
        self.beta = beta_parameters(c1, spread) if spread > 0 else None

    def level_survival(self, level: float) -> np.ndarray:
        """The survival vector of a request whose first-position rate is ``level``."""
        scale = level / self.c1 if self.c1 > 0 else 1.0
        return np.concatenate(([1.0], np.cumprod(np.minimum(1.0, self.conditional * scale))))

    def draw_level(self, rng: np.random.Generator) -> list[float]:
        """A new request's thresholds: [-S[1], ..., -S[K]] (increasing, for bisect)."""
        level = rng.beta(*self.beta) if self.beta is not None else self.c1
        return (-self.level_survival(level)[1:]).tolist()

    def request_state(self, rng: np.random.Generator, request_id: int) -> list[float]:
        return self.draw_level(rng)

    @staticmethod
    def tokens(thresholds: list[float], u: float) -> int:
        return 1 + bisect_left(thresholds, -u)


class AcceptanceReplay:
    """Accepted lengths replayed from a measured trace: request i of a run takes the
    steps of the (i mod n)-th traced request (in request-id order), in order, starting
    over when they run out; each step yields 1 + its accepted draft tokens, at most
    the speculator's most tokens per step."""

    def __init__(self, steps_by_request: list[np.ndarray], max_tokens: int) -> None:
        self.steps = [np.minimum(1 + np.asarray(s, dtype=np.int64), max_tokens).tolist() for s in steps_by_request]
        self.max_tokens = max_tokens

    def mean(self) -> float:
        total = sum(sum(s) for s in self.steps)
        return total / sum(len(s) for s in self.steps)

    def survival(self) -> np.ndarray:
        """The survival vector of all replayed steps pooled."""
        counts = np.bincount(np.concatenate([np.asarray(s) for s in self.steps]), minlength=self.max_tokens + 1)
        tail = counts[::-1].cumsum()[::-1]
        return tail[1:self.max_tokens + 1] / tail[1]

    def cursor(self, request_index: int) -> list:
        """Replay state of the request with this index: [its steps, position]."""
        return [self.steps[request_index % len(self.steps)], 0]

    def request_state(self, rng: np.random.Generator, request_id: int) -> list:
        return self.cursor(request_id)

    @staticmethod
    def tokens(cursor: list, u: float) -> int:
        steps, pos = cursor
        cursor[1] = pos + 1 if pos + 1 < len(steps) else 0
        return steps[pos]
