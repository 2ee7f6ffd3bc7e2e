"""Speculation-length policies: how many tokens to speculate in each step.

A policy's ``choose(batch, context_tokens, waiting)`` returns the length k (0 = off)
of the next step of ``batch`` decoding sequences with ``context_tokens`` cached in all
while ``waiting`` requests queue. ``None`` (no policy object) means ``fixed``: the
speculator's longest length in every step.

``BatchThreshold``
    vLLM's switch (``speculative_disable_by_batch_size``): speculation off (or at
    ``reduced_length``) in steps whose batch has at least ``batch_size`` sequences, or
    while at least ``queue_length`` requests wait (0 = that test is not used).
``Goodput``
    SmartSpec/TurboSpec's rule: the length that maximises expected tokens per second
    of this step, batch x E[min(A, k + 1)] / (draft time(k) + verify time(k)), from
    the acceptance model's survival vector and the cost model at the current batch and
    context (k = 0: batch / decode time). The choice is remembered per batch size and
    context bucket (contexts within 2^(1/8), about 9%, share it); the step itself is
    always costed exactly.
"""

from __future__ import annotations

import math


class BatchThreshold:
    def __init__(self, batch_size: int, queue_length: int = 0, reduced_length: int = 0,
                 full_length: int = 1) -> None:
        self.batch_size, self.queue_length = batch_size, queue_length
        self.reduced_length, self.full_length = reduced_length, full_length

    def choose(self, batch: int, context_tokens: int, waiting: int) -> int:
        if (self.batch_size and batch >= self.batch_size) or (self.queue_length and waiting >= self.queue_length):
            return self.reduced_length
        return self.full_length


class Goodput:
    def __init__(self, speculator, cost_model) -> None:
        self.speculator, self.cost_model = speculator, cost_model
        s = speculator.survival()
        self.lengths = speculator.lengths()
        self.expected = {k: float(s[:k + 1].sum()) for k in self.lengths}
        self._memo: dict[tuple[int, int], int] = {}

    def rate(self, length: int, batch: int, context_tokens: int) -> float:
        """Expected tokens per second of a step at ``length`` (the quantity maximised)."""
        spec, cm = self.speculator, self.cost_model
        t = cm.step_cost(batch, spec.width(length), context_tokens, spec.kind(length)).time_s
        if length and spec.has_draft_stage:
            draft = spec.draft_cost(cm, batch, context_tokens, length)
            t += draft.time_s if draft is not None else 0.0
        return batch * self.expected[length] / t

    def choose(self, batch: int, context_tokens: int, waiting: int) -> int:
        key = (batch, int(8 * math.log2(1 + context_tokens)))
        k = self._memo.get(key)
        if k is None:
            if len(self._memo) > 65536:
                self._memo.clear()
            k = self._memo[key] = max(self.lengths, key=lambda n: self.rate(n, batch, context_tokens))
        return k
