"""A request's state inside the server, from arrival to finish."""

from __future__ import annotations

import math

from servesim.workload import Request

__all__ = ["Sequence", "StepOutcome"]


class Sequence:
    """A request's state from arrival to finish.

    ``remaining``: output tokens still to generate, less the tokens a verify step
    accepted past the end (so <= 0 once finished). Every verify step's accepted tokens
    count against it, so a prefilled request has accepted ``output_len - 1 -
    remaining`` tokens in verify steps. While running, its KV cache holds
    ``prompt_len + (output_len - remaining) - 1`` tokens (the last generated token is
    the next step's query). ``joined_iteration``: the server's iteration count when the
    request's prefill finished (its verify steps are the iterations since), -1 before.
    With fixed acceptance (``Server.fixed``), ``remaining`` is advanced only when the
    request finishes or the run ends: until then it is the count after prefill.
    """

    __slots__ = ("request", "arrival_s", "eligible_s", "start_s", "remaining", "joined_iteration",
                 "first_token_s", "kv_tokens", "finished", "done", "computed", "blocks", "preemptions",
                 "target", "steps_before", "extra_tokens", "shared_tokens", "accept", "pauses",
                 "swapped_tokens")

    def __init__(self, request: Request, arrival_s: float, kv_tokens: int, done) -> None:
        self.request = request
        self.arrival_s = arrival_s
        self.eligible_s = math.nan
        self.start_s = math.nan
        self.remaining = request.output_len
        self.joined_iteration = -1
        self.first_token_s = math.nan
        self.kv_tokens = kv_tokens
        self.finished = False
        self.done = done  # an event that succeeds when the request leaves (closed loop), or None
        self.computed = 0  # prompt tokens prefilled so far (vllm policy's chunks)
        # paged KV (vllm policy): blocks held, times preempted, tokens to prefill (the
        # prompt, or after a preemption prompt + tokens generated), verify steps run and
        # tokens yielded by re-prefills before the last preemption
        self.blocks = 0
        self.preemptions = 0
        self.target = request.prompt_len
        self.steps_before = 0
        self.extra_tokens = 0
        self.shared_tokens = 0  # its leading tokens in cached prefix blocks (not its own)
        self.accept = None  # its own acceptance (a speculator with per-request acceptance)
        # preempted while running: [preempted_s, resumed_s, token, ...], token 1.0 if it
        # resumed with a token (a re-prefill's), 0.0 if not (swapped back in)
        self.pauses = None
        self.swapped_tokens = 0  # swapped out: its KV tokens in CPU memory (whole blocks)

    def context_tokens(self) -> int:
        """Tokens of this (running) request in the KV cache."""
        r = self.request
        return r.prompt_len + r.output_len - max(self.remaining, 0) - 1


class StepOutcome:
    """What a step of the vllm policy drew for its decodes (None without decodes), for
    taking it back if ``max_sim_time_s`` cuts the step."""

    __slots__ = ("decodes",)

    def __init__(self, decodes) -> None:
        self.decodes = decodes
