"""What a scheduler decides: the GPU's next step.

A scheduler policy is asked, whenever the GPU is free (after the engine has let in the
requests that arrived), what the next step is; it answers with one of the decisions
below, or None when the run is over, and the engine (:mod:`servesim.serving.engine`)
runs it. A policy reads the server's queues (``waiting``, ``prefilling``, ``running``,
``swapped``) and changes them only through the server's methods (``take``, ``start``,
``preempt``, ``swap_out``, ``swap_in``) and its KV manager (``server.kv``). No SimPy
here, and no cost arithmetic.
"""

from __future__ import annotations

__all__ = ["Decode", "Mixed", "Prefill", "Scheduler", "Wait", "DECODE", "DECODE_BATCH", "WAIT"]


class Wait:
    """Idle until the next arrival or ``timeout_s`` seconds (None: no timeout)."""

    __slots__ = ("timeout_s",)

    def __init__(self, timeout_s: float | None = None) -> None:
        self.timeout_s = timeout_s


class Prefill:
    """One prefill step for ``seqs`` (admitted, each its whole prompt); they join the
    running requests with their first token."""

    __slots__ = ("seqs",)

    def __init__(self, seqs: list) -> None:
        self.seqs = seqs


class Decode:
    """Iterations (draft + verify, or decode) of all running requests: until they have
    all finished or, with ``until_admissible``, until a waiting request could join (or,
    with paged KV, a running one cannot get its next blocks)."""

    __slots__ = ("until_admissible",)

    def __init__(self, until_admissible: bool) -> None:
        self.until_admissible = until_admissible


class Mixed:
    """One forward step of the running requests' iteration and prefill ``chunks``
    ((request, tokens) in FCFS order)."""

    __slots__ = ("chunks",)

    def __init__(self, chunks: list) -> None:
        self.chunks = chunks


WAIT = Wait()
DECODE = Decode(until_admissible=True)
DECODE_BATCH = Decode(until_admissible=False)


class Scheduler:
    """A policy: ``next_step(server)`` returns the next decision, or None when no request
    is left and none will come."""

    def __init__(self, config) -> None:
        self.config = config

    def next_step(self, server):
        raise NotImplementedError

    @staticmethod
    def without_new_work(server):
        """The decision when no request can be started or advanced this step: decode the
        running ones, else wait for what is still to come, else None (the run is over)."""
        if server.running:
            return DECODE
        if not server.waiting and not server.expecting_arrivals():
            return None
        return WAIT
