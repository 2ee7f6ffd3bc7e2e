"""vLLM V1's scheduling policy with a paged KV cache: blocks as tokens come, preemption
by recomputation, and an optional prefix cache."""

from __future__ import annotations

import math

from servesim.serving.schedulers.base import DECODE, WAIT, Mixed, Scheduler


class PagedVllmScheduler(Scheduler):
    """The vLLM policy (:class:`~servesim.serving.schedulers.vllm.VllmScheduler`) with
    paged KV (``server.kv``, a :class:`~servesim.serving.kv_cache.PagedKV`): before a
    step every scheduled request gets the blocks its new tokens need (a decode: its
    verify width, whose extra slots are vLLM's lookahead slots); when one cannot, the
    most recently admitted request (the last partly prefilled one, else the last
    running one) is preempted, as often as needed, as in vLLM; waiting requests are
    admitted only in steps without a preemption, each with the blocks of its first
    chunk, after a prefix-cache lookup. Every step with a chunk is a mixed step; steps
    with decodes only run on the engine's decode fast path.

    ``preemption_mode = "swap"`` (vLLM V0's swap preemption): a running victim's KV is
    swapped out to CPU memory (``server.swap_out``) if the swap space has room, else it
    is recomputed, as is a victim still in its prefill. In a step without a
    preemption, swapped requests come back first, in the order they left, each as soon
    as its blocks (context + verify width) fit (``server.swap_in``), and no waiting
    request is admitted while any is swapped out (vLLM V0's default scheduler)."""

    def __init__(self, config, tokens_per_step: int) -> None:
        super().__init__(config)
        self.tokens_per_step = tokens_per_step
        self.threshold = config.long_prefill_token_threshold or math.inf
        self.swap = config.preemption_mode == "swap"

    def _preempt(self, server, victim) -> None:
        if self.swap and victim in server.running and server.can_swap_out(victim):
            server.swap_out(victim)
        else:
            server.preempt(victim)

    def next_step(self, server):
        c, n, threshold = self.config, self.tokens_per_step, self.threshold
        kv = server.kv
        block = kv.block_size
        running, prefilling, waiting = server.running, server.prefilling, server.waiting
        preempted = False
        for s in list(running):  # admission order
            r = s.request
            # (the common case inline: its blocks already hold context + width)
            rem = server.remaining_now(s)
            if (r.prompt_len + r.output_len - rem - 1 + n - s.shared_tokens <= s.blocks * block
                    and not preempted):
                continue
            if s not in running:
                continue  # preempted for an earlier one
            while not kv.grow(s, r.prompt_len + r.output_len - server.remaining_now(s) - 1 + n):
                victim = prefilling[-1] if prefilling else running[-1]
                self._preempt(server, victim)
                preempted = True
                if victim is s:
                    break
        swapped = server.swapped
        while swapped and not preempted and len(running) + len(prefilling) < c.batch_size:
            s = swapped[0]
            r = s.request
            if not kv.grow(s, r.prompt_len + r.output_len - s.remaining - 1 + n):
                break
            server.swap_in(s)
        budget = c.max_num_batched_tokens - len(running) * n
        chunks = []
        for s in list(prefilling):
            if budget <= 0:
                break
            take = int(min(s.target - s.computed, budget, threshold))
            while not kv.grow(s, s.computed + take):
                victim = prefilling[-1]
                self._preempt(server, victim)
                preempted = True
                if victim is s:
                    break
            if s in prefilling:
                chunks.append((s, take))
                budget -= take
        while (not preempted and not swapped and budget > 0 and waiting
               and len(running) + len(prefilling) < c.batch_size):
            s = waiting[0]
            s.computed = 0
            kv.prefix_hit(s)
            take = int(min(s.target - s.computed, budget, threshold))
            if not kv.grow(s, s.computed + take):  # not admitted after all: undo the lookup
                kv.undo_prefix_hit(s)
                break
            waiting.popleft()
            server.start(s)
            prefilling.append(s)
            chunks.append((s, take))
            budget -= take
        if chunks:
            return Mixed(chunks)
        if running:  # decodes only: the fast path, until a request could join or needs a block
            return DECODE
        if not waiting and not swapped and not server.expecting_arrivals():
            return None
        if (waiting or swapped) and not prefilling:
            # nothing runs and the first waiting (or swapped) request cannot get its
            # blocks: it can never fit (rejected at arrival otherwise); cannot happen
            raise AssertionError("paged KV: an idle GPU cannot admit the first waiting request")
        return WAIT
