"""Medusa token trees and their acceptance, from per-head accuracies.

Model (DESIGN.md): head k (k = 1..H) independently has one correct rank R_k, with
P(R_k = r) = top(r+1) - top(r) from the head's measured cumulative top-k accuracy, and
no correct rank among the measured ones with the remaining probability. A tree is a set
of paths (r_1, ..., r_d), prefix-closed, plus the root. A verify step accepts the root
plus the longest prefix (R_1, ..., R_L) that is a path of the tree, so it yields L + 1
tokens. Hence

    E[tokens per step] = 1 + sum over tree nodes of prod_k P(R_k = r_k)

(each node contributes the probability that its whole path is correct). Ranks beyond
the measured top-5 have unknown probability and are taken as 0: nodes that use them add
width but, in this model, never acceptance.

A greedy tree of N candidate tokens is the root plus the N - 1 nodes of highest path
probability; since a child's path probability never exceeds its parent's, adding nodes
in that order keeps the tree prefix-closed, and no other tree of that size has a larger
expected acceptance.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from servesim.catalog import data_csv, data_json

BUNDLED_ACCURACY = {"vicuna-7b": "vicuna-7b-v1.3", "vicuna-13b": "vicuna-13b-v1.3",
                    "vicuna-33b": "vicuna-33b-v1.3"}
"""Head-accuracy tables shipped with servesim (Medusa-1 heads), by short name."""


def bundled_tree_names() -> list[str]:
    return list(data_json("medusa_trees.json")["trees"])


def _rank_probabilities(rows: list[dict[str, str]], where: str) -> np.ndarray:
    tops = sorted((c for c in rows[0] if c.startswith("top")), key=lambda c: int(c[3:]))
    cumulative = np.array([[float(r[c]) for c in tops] for r in sorted(rows, key=lambda r: int(r["head"]))])
    if (np.diff(cumulative, axis=1) < 0).any() or cumulative.min() < 0 or cumulative.max() > 1:
        raise ValueError(f"{where}: cumulative top-k accuracies must rise with k and lie in [0, 1]")
    return np.diff(cumulative, axis=1, prepend=0.0)


def head_rank_probabilities(source: str) -> np.ndarray:
    """P(R_k = r) as an array [head, rank], from a bundled name or a CSV file.

    A CSV has columns ``head`` (0-based) and ``top1``, ``top2``, ... (cumulative
    accuracies); the bundled file also has a ``model`` column.
    """
    if source in BUNDLED_ACCURACY:
        rows = [r for r in data_csv("medusa_head_accuracy.csv") if r["model"] == BUNDLED_ACCURACY[source]]
        return _rank_probabilities(rows, source)
    from servesim.inputs import read_head_accuracy
    return np.diff(read_head_accuracy(source), axis=1, prepend=0.0)


def path_probability(path: tuple[int, ...], probs: np.ndarray) -> float:
    """Probability that every rank on ``path`` is the correct one of its head."""
    p = 1.0
    for head, rank in enumerate(path):
        if head >= probs.shape[0] or rank >= probs.shape[1]:
            return 0.0
        p *= float(probs[head, rank])
    return p


def greedy_tree(probs: np.ndarray, candidate_tokens: int, max_rank: int | None = None) -> list[tuple[int, ...]]:
    """The root's N - 1 = ``candidate_tokens`` - 1 best nodes, in insertion order."""
    ranks = probs.shape[1] if max_rank is None else max_rank
    heads = probs.shape[0]
    frontier = [(-path_probability((r,), probs), (r,)) for r in range(ranks)]
    heapq.heapify(frontier)
    tree: list[tuple[int, ...]] = []
    while frontier and len(tree) < candidate_tokens - 1:
        neg_p, path = heapq.heappop(frontier)
        tree.append(path)
        if len(path) < heads:
            for r in range(ranks):
                child = path + (r,)
                heapq.heappush(frontier, (-path_probability(child, probs), child))
    return tree


def published_tree(name: str) -> list[tuple[int, ...]]:
    """A bundled Medusa tree (63 nodes) as paths in greedy insertion order."""
    trees = data_json("medusa_trees.json")["trees"]
    if name not in trees:
        raise KeyError(name)
    return [tuple(p) for p in trees[name]]


def expected_tokens(tree: list[tuple[int, ...]], probs: np.ndarray) -> float:
    """Closed form: 1 + sum of path probabilities over the tree's nodes."""
    return 1.0 + sum(path_probability(p, probs) for p in tree)


@dataclass(frozen=True)
class TreeAcceptance:
    """Tokens per verify step of a Medusa tree under the independent-heads model."""

    tree: tuple[tuple[int, ...], ...]
    probs: np.ndarray

    def __post_init__(self) -> None:
        paths = set(self.tree)
        for p in self.tree:
            if p[:-1] and p[:-1] not in paths:
                raise ValueError(f"tree path {list(p)} has no parent {list(p[:-1])} in the tree")

    @property
    def depth(self) -> int:
        return max((len(p) for p in self.tree), default=0)

    @property
    def max_tokens(self) -> int:
        return self.depth + 1

    @property
    def mean(self) -> float:
        return expected_tokens(list(self.tree), self.probs)

    def survival(self) -> np.ndarray:
        """S[d] = P(tokens >= d + 1): the summed path probabilities of the nodes at depth d."""
        s = np.zeros(self.depth + 1)
        s[0] = 1.0
        for p in self.tree:
            s[len(p)] += path_probability(p, self.probs)
        return s

    def nodes_per_depth(self) -> list[int]:
        """Tree nodes at depth 1, 2, ... (the root, depth 0, not counted)."""
        counts = [0] * self.depth
        for p in self.tree:
            counts[len(p) - 1] += 1
        return counts

    def _children(self) -> np.ndarray:
        """child[node, rank] = node index of that child, -1 if none; node 0 is the root."""
        ranks = 1 + max((max(p) for p in self.tree), default=0)
        index = {(): 0}
        for i, p in enumerate(self.tree, start=1):
            index[p] = i
        child = np.full((len(self.tree) + 1, ranks + 1), -1, dtype=np.int64)
        for p, i in index.items():
            if p:
                child[index[p[:-1]], p[-1]] = i
        return child

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """For n sequences: draw every head's correct rank, walk the tree, count."""
        child = self._children()
        no_rank = child.shape[1] - 1  # a column that is always -1
        heads = min(self.depth, self.probs.shape[0])
        node = np.zeros(n, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        tokens = np.ones(n, dtype=np.int64)
        u = rng.random((n, max(heads, 1)))
        for k in range(heads):
            cdf = np.cumsum(self.probs[k])
            rank = np.searchsorted(cdf, u[:, k], side="right")  # len(cdf) = no correct rank
            rank = np.where(rank < min(len(cdf), no_rank), rank, no_rank)
            nxt = child[node, rank]
            alive &= nxt >= 0
            tokens += alive
            node = np.where(alive, nxt, node)
        return tokens


def dynamic_tree(probs: np.ndarray, topk: int, depth: int, total_tokens: int) -> list[tuple[int, ...]]:
    """EAGLE-2's draft tree: from the root, each of ``depth`` draft passes expands the
    ``topk`` nodes of highest path confidence of the last level by their ``topk``
    children; then the ``total_tokens - 1`` expanded nodes of highest confidence are
    verified. Confidence is the path probability (EAGLE-2 finds the draft well
    calibrated), so the tree adapts to the acceptance table, not to each context."""
    level = [()]
    expanded: list[tuple[int, ...]] = []
    for _ in range(depth):
        children = [p + (r,) for p in level for r in range(min(topk, probs.shape[1]))]
        children.sort(key=lambda p: -path_probability(p, probs))
        expanded += children
        level = children[:topk]
    expanded.sort(key=lambda p: (-path_probability(p, probs), len(p)))
    chosen = expanded[: total_tokens - 1]
    chosen_set = set(chosen)
    # keep it prefix-closed (ties could order a child before its parent)
    return [p for p in chosen if all(p[:i] in chosen_set for i in range(1, len(p)))]


def optimal_tree_value(position_acceptance: list[float], size: int, max_depth: int | None = None) -> float:
    """Sequoia's dynamic programme: the largest expected tokens per step of a tree of
    exactly ``size`` tokens (root included) when the child of sibling rank i is accepted
    with probability ``position_acceptance[i]`` given its parent was, at any depth.

    f(n, d): best value of a subtree of n nodes and depth at most d, its root accepted:
    1 + g(n - 1, 0, d - 1), where g(m, i, d) places m nodes under the children of ranks
    i, i + 1, ... (each child's subtree of n_i nodes worth p_i f(n_i, d)). Without a
    depth limit this equals the greedy tree (a child never beats its parent), which the
    tests check, and both against brute force. -inf where no such tree exists."""
    p = list(position_acceptance)
    depth = size - 1 if max_depth is None else max_depth
    cache_f: dict[tuple[int, int], float] = {}
    cache_g: dict[tuple[int, int, int], float] = {}

    def f(n: int, d: int) -> float:
        if n == 1:
            return 1.0
        if d <= 0:
            return -math.inf
        key = (n, d)
        if key not in cache_f:
            cache_f[key] = 1.0 + g(n - 1, 0, d - 1)
        return cache_f[key]

    def g(m: int, i: int, d: int) -> float:
        if m == 0:
            return 0.0
        if i >= len(p):
            return -math.inf
        key = (m, i, d)
        if key not in cache_g:
            best = g(m, i + 1, d)  # no child of rank i
            for j in range(1, m + 1):
                sub, rest = f(j, d), g(m - j, i + 1, d)
                if sub > -math.inf and rest > -math.inf:
                    best = max(best, p[i] * sub + rest)
            cache_g[key] = best
        return cache_g[key]

    return f(size, depth)
