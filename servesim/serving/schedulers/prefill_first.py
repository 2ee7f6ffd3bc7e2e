"""Continuous batching with each new request's prefill as a step of its own."""

from __future__ import annotations

from servesim.serving.schedulers.base import DECODE, Prefill, Scheduler


class PrefillFirstScheduler(Scheduler):
    """Iteration-level scheduling: before every iteration, admits waiting requests
    (FCFS, as many as fit in the KV cache, their prompts within
    ``max_num_batched_tokens``, a longer one alone) up to ``batch_size`` running; runs
    their prefill as a step of its own first, then iterations of all running requests
    until a waiting request could join."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.prefilled = False  # the last step was a prefill: iterations come next

    def next_step(self, server):
        c = self.config
        if self.prefilled:
            self.prefilled = False
            server.mark_eligible()
            if server.running:
                return DECODE
        new = server.take(c.batch_size - len(server.running), c.max_num_batched_tokens)
        if new:
            self.prefilled = True
            return Prefill(new)
        return self.without_new_work(server)
