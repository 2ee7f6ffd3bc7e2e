"""vLLM V1's scheduling policy, with KV reserved whole at admission."""

from __future__ import annotations

import math

from servesim.serving.schedulers.base import Mixed, Scheduler


class VllmScheduler(Scheduler):
    """vLLM V1's policy, matched to ``Scheduler.schedule`` in
    ``vllm/v1/core/sched/scheduler.py`` (vLLM main, commit 00024d3, read 2026-12-01):
    a token budget of ``max_num_batched_tokens`` per step; the running requests first,
    in admission order, each its new tokens (a decode's verify width, a partly
    prefilled prompt's next chunk of at most ``long_prefill_token_threshold`` tokens and
    what is left of the budget); then waiting requests, FCFS, while the budget lasts and
    fewer than ``batch_size`` (``max_num_seqs``) run, each with its first chunk; all in
    one forward step. Differences, stated: every running decode is always scheduled (the
    scenario's budget must exceed ``batch_size`` x the verify width), and KV is reserved
    whole at admission, so nothing is ever preempted (paged KV with preemption:
    :mod:`servesim.serving.schedulers.vllm_paged`). Steps with no chunk run on the
    engine's decode fast path."""

    def __init__(self, config, tokens_per_step: int) -> None:
        super().__init__(config)
        self.tokens_per_step = tokens_per_step  # a decode's tokens in a step (the verify width)
        self.threshold = config.long_prefill_token_threshold or math.inf

    def next_step(self, server):
        c, threshold = self.config, self.threshold
        budget = c.max_num_batched_tokens - len(server.running) * self.tokens_per_step
        chunks = []
        for s in server.prefilling:
            if budget <= 0:
                break
            take = int(min(s.request.prompt_len - s.computed, budget, threshold))
            chunks.append((s, take))
            budget -= take
        while budget > 0 and server.waiting and len(server.running) + len(server.prefilling) < c.batch_size:
            admitted = server.take(1)
            if not admitted:
                break
            s = admitted[0]
            s.computed = 0
            server.prefilling.append(s)
            take = int(min(s.request.prompt_len, budget, threshold))
            chunks.append((s, take))
            budget -= take
        if chunks:
            return Mixed(chunks)
        return self.without_new_work(server)
