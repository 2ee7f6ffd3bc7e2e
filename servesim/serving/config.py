"""How a server batches and what memory it has: the serving half of a scenario, as the
engine reads it."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ServingConfig"]


@dataclass(frozen=True)
class ServingConfig:
    """How the server batches and what memory it has.

    batching: ``"static"`` or ``"continuous"``.
    batch_size: requests per static batch, or most running requests (continuous).
    max_wait_s: static batching: start a partial batch once its oldest request waited
        this long (seconds; inf = only when no more requests can come).
    kv_capacity_tokens: KV-cache capacity in tokens (inf = unlimited).
    max_sim_time_s: stop the simulation at this simulated time (inf = run to the end).
    max_num_batched_tokens: continuous batching: the token budget of a step (vLLM's
        name). ``prefill_first`` and ``sglang``: most prompt tokens one prefill step
        takes in (a longer prompt still runs, alone). ``vllm``: decode, verify and
        prefill-chunk tokens of one step together.
    scheduler: continuous batching's policy: ``prefill_first`` (new requests'
        prefill as a step of its own before the next iteration), ``vllm`` (vLLM V1:
        decodes first, then prefill chunks within the token budget, mixed into the
        same step; see :mod:`servesim.serving.schedulers.vllm`) or ``sglang`` (a
        prefill batch whenever one can start, decodes otherwise; see
        :mod:`servesim.serving.schedulers.sglang`).
    long_prefill_token_threshold: ``vllm``: most tokens of one prompt per step (0 =
        the budget's).
    kv_cache: ``reserve`` (a request reserves prompt + output + lookahead tokens when
        admitted; nothing is preempted) or, with the ``vllm`` policy, ``paged`` (blocks of
        ``block_size`` tokens allocated as tokens are appended; a request that cannot
        grow preempts the most recently admitted running request, which is recomputed:
        its blocks are freed and it re-prefills its prompt and the tokens it generated).
    enable_prefix_caching: ``paged``: the full blocks of a request's shared prefix stay
        cached; a later request with that prefix skips prefilling them.
    preemption_mode: ``paged``: ``recompute`` (a preempted request's blocks are freed;
        it re-prefills) or ``swap`` (a running victim's KV is copied to CPU memory and
        back; see :mod:`servesim.serving.schedulers.vllm_paged`).
    swap_space_tokens: ``swap``: CPU memory for swapped KV, in tokens.
    kv_bytes_per_token: KV bytes of one token on one GPU (the target's and a draft's or
        head's), for the cost of swapping.
    """

    batching: str = "static"
    batch_size: int = 4
    max_wait_s: float = math.inf
    kv_capacity_tokens: float = math.inf
    max_sim_time_s: float = math.inf
    max_num_batched_tokens: float = math.inf
    scheduler: str = "prefill_first"
    long_prefill_token_threshold: int = 0
    kv_cache: str = "reserve"
    block_size: int = 16
    enable_prefix_caching: bool = False
    preemption_mode: str = "recompute"
    swap_space_tokens: float = 0.0
    kv_bytes_per_token: int = 0

    @property
    def paged(self) -> bool:
        """Whether KV is paged (continuous batching under the vllm policy, ``kv_cache =
        "paged"``; the scenario refuses ``paged`` with any other policy)."""
        return self.batching == "continuous" and self.scheduler == "vllm" and self.kv_cache == "paged"
