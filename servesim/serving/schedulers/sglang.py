"""SGLang's scheduling policy: a new prefill batch whenever one can start."""

from __future__ import annotations

from servesim.serving.schedulers.base import Prefill, Scheduler


class SglangScheduler(Scheduler):
    """SGLang's policy, matched to ``Scheduler.get_next_batch_to_run`` in
    ``python/sglang/srt/managers/scheduler.py`` (SGLang 0.4-0.5, read 2026-12-07):
    before every forward step, a prefill batch of waiting requests runs first if one can
    be formed ("run prefill first if possible": FCFS, as many as fit in the KV cache and
    in ``max_num_batched_tokens`` prompt tokens, SGLang's ``chunked_prefill_size``, with
    fewer than ``batch_size``, its ``max_running_requests``, running); the running
    requests' iteration (decode, or draft and verify) only when none can. Prefill steps
    are never mixed with decodes (SGLang's default, without ``--enable-mixed-chunk``).

    A burst of arrivals is therefore prefilled back to back while the running requests
    wait, and a closed loop of equal requests stays in step: its clients' requests
    arrive together, are prefilled together and decode together. Its first tokens come
    late (a request waits for the prefills ahead of it) and its later ones fast, as
    SGLang's measured serving points show.

    Differences, stated: a prompt longer than the budget runs as one prefill step of its
    own (SGLang prefills it in chunks of the budget over consecutive steps, the same
    work back to back), and KV is reserved whole at admission (SGLang admits against an
    estimate of the output still to come and retracts requests when it runs out)."""

    def next_step(self, server):
        c = self.config
        new = server.take(c.batch_size - len(server.running), c.max_num_batched_tokens)
        if new:
            return Prefill(new)
        return self.without_new_work(server)
