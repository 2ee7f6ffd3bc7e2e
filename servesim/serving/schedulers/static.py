"""Static batching: a batch runs from its prefill until its last request finishes."""

from __future__ import annotations

import math

from servesim.serving.schedulers.base import DECODE_BATCH, WAIT, Prefill, Scheduler, Wait


class StaticScheduler(Scheduler):
    """Takes up to ``batch_size`` waiting requests (FCFS, as many as fit in the KV
    cache) once the batch is full, or once its oldest request has waited ``max_wait_s``,
    or when no more requests can come; runs one prefill step for the batch, then
    iterations until every request of the batch has finished (finished requests leave;
    the batch shrinks)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self.phase = None  # "prefilled": the batch's iterations come next; "decoded": it is done

    def next_step(self, server):
        c = self.config
        if self.phase == "prefilled":
            self.phase = "decoded"
            return DECODE_BATCH
        if self.phase == "decoded":
            self.phase = None
            server.mark_eligible()
        if not server.waiting:
            return WAIT if server.expecting_arrivals() else None
        if len(server.waiting) < c.batch_size and server.expecting_arrivals():
            deadline = server.waiting[0].arrival_s + c.max_wait_s
            if server.now < deadline:
                return WAIT if math.isinf(deadline) else Wait(deadline - server.now)
        self.phase = "prefilled"
        return Prefill(server.take(c.batch_size))
