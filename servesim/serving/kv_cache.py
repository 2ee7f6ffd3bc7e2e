"""The paged KV cache: fixed-size blocks allocated as tokens are appended (vLLM's
PagedAttention block manager), with an optional prefix cache.

A request holds ``ceil(tokens / block_size)`` blocks for the tokens whose K and V it
keeps; before a step it asks for the blocks its new tokens (and a speculative step's
lookahead slots) need, and gets them or not. Capacity is in tokens, as the rest of
servesim counts it (``kv_capacity_tokens``), rounded down to whole blocks. Plain
Python, no SimPy: the scheduler decides what to do when a request cannot grow
(preempt the most recently admitted running request, as vLLM does).

Prefix cache (vLLM's automatic prefix caching, at the granularity of a workload's shared
prefixes): the full blocks of a prefix, once a request has computed them, stay in the
cache under the prefix's id; later requests with that prefix use them instead of
prefilling those tokens. A cached prefix in use by running requests is never freed;
one no request uses is evicted, least recently used first, when blocks are needed.

A server's KV is one of two managers with the same small interface (``fits_alone``,
``can_admit``, ``free``, ``prefix_computed``, ``used_tokens``, ``peak_tokens``; paged KV
also ``grow``, the prefix cache and swapping's ``block_tokens`` and ``can_swap_in``):
:class:`ReservedKV` (a request holds its whole lifetime's KV from admission) and
:class:`PagedKV` (a :class:`PagedKVCache` applied to requests: their own blocks and their
use of cached prefixes). Both call ``advance`` (the server's time integrals) before the
occupancy changes. What to do when a request cannot grow is the scheduler's decision
(:mod:`servesim.serving.schedulers.vllm_paged`); the engine carries out a preemption.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable


class PagedKVCache:
    """Block accounting of one GPU's KV cache (see module docstring)."""

    def __init__(self, capacity_tokens: float, block_size: int = 16) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.total_blocks = math.inf if math.isinf(capacity_tokens) else int(capacity_tokens // block_size)
        self.used_blocks = 0
        self.prefixes: dict[int, list[int]] = {}  # prefix id -> [blocks, requests using it]
        self.unused: OrderedDict[int, None] = OrderedDict()  # cached prefixes nobody uses, LRU first

    def blocks(self, tokens: int) -> int:
        """Blocks that hold ``tokens`` tokens."""
        return -(-tokens // self.block_size)

    @property
    def free_blocks(self) -> float:
        return self.total_blocks - self.used_blocks

    def grow(self, held: int, tokens: int) -> int | None:
        """Blocks held after growing from ``held`` blocks to room for ``tokens``
        tokens, or None (nothing allocated) if the free blocks do not suffice."""
        need = self.blocks(tokens) - held
        if need <= 0:
            return held
        while need > self.free_blocks and self.unused:  # evict unused prefixes, LRU first
            prefix, _ = self.unused.popitem(last=False)
            self.used_blocks -= self.prefixes.pop(prefix)[0]
        if need > self.free_blocks:
            return None
        self.used_blocks += need
        return held + need

    def release(self, held: int) -> None:
        """Free ``held`` blocks (a request finished or was preempted)."""
        self.used_blocks -= held
        if self.used_blocks < 0:
            raise AssertionError("more KV blocks freed than allocated")

    @property
    def used_tokens(self) -> int:
        """Capacity in use, in tokens (whole blocks)."""
        return self.used_blocks * self.block_size

    def lookup(self, prefix: int) -> int:
        """Cached blocks of ``prefix`` (0 if not cached); a hit counts the caller as a
        user of them until :meth:`unref`."""
        entry = self.prefixes.get(prefix)
        if entry is None:
            return 0
        entry[1] += 1
        self.unused.pop(prefix, None)
        return entry[0]

    def register(self, prefix: int, blocks: int) -> bool:
        """Keep ``blocks`` of a request's own blocks as the cached ``prefix`` (the
        request becomes its first user); False if another request cached it first."""
        if prefix in self.prefixes or blocks <= 0:
            return False
        self.prefixes[prefix] = [blocks, 1]
        return True

    def unref(self, prefix: int) -> None:
        """A user of ``prefix`` left; with no user left it becomes evictable (newest)."""
        entry = self.prefixes[prefix]
        entry[1] -= 1
        if entry[1] == 0:
            self.unused[prefix] = None


class ReservedKV:
    """KV reserved whole: an admitted request holds ``Sequence.kv_tokens`` tokens (prompt
    + output + a speculative step's lookahead) until it finishes; nothing is preempted.

    capacity_tokens: KV-cache capacity in tokens (inf = unlimited).
    advance: called before the occupancy changes (the server's time integrals).
    """

    paged = False
    prefix_hit_tokens = 0
    prompt_tokens_admitted = 0

    def __init__(self, capacity_tokens: float, advance: Callable[[], None]) -> None:
        self.capacity_tokens = capacity_tokens
        self.used_tokens = 0
        self.peak_tokens = 0
        self._advance = advance

    def fits_alone(self, s) -> bool:
        """Whether ``s`` fits in an empty cache (a request that never can is rejected)."""
        return s.kv_tokens <= self.capacity_tokens

    def can_admit(self, s) -> bool:
        """Whether ``s``'s reservation fits beside those held now."""
        return self.used_tokens + s.kv_tokens <= self.capacity_tokens

    def admit(self, s) -> None:
        self._advance()
        self.used_tokens += s.kv_tokens
        if self.used_tokens > self.peak_tokens:
            self.peak_tokens = self.used_tokens

    def free(self, s) -> None:
        """``s`` finished: its reservation is free."""
        self.used_tokens -= s.kv_tokens

    def prefix_computed(self, s) -> None:
        """(No prefix cache without paged blocks.)"""


class PagedKV:
    """A :class:`PagedKVCache` applied to requests. A request (``Sequence``) holds
    ``s.blocks`` blocks of its own; its first ``s.shared_tokens`` tokens are in its
    prefix's cached blocks, which it uses but does not own.

    capacity_tokens, block_size: the cache (``kv_capacity_tokens``, vLLM's block size).
    enable_prefix_caching: a request's shared prefix's full blocks are cached and reused.
    chunk_tokens: most tokens a first prefill chunk takes (the step's token budget);
        :meth:`can_admit` asks for room for that chunk.
    advance: called before the occupancy changes (the server's time integrals).
    """

    paged = True

    def __init__(self, capacity_tokens: float, block_size: int, enable_prefix_caching: bool,
                 chunk_tokens: float, advance: Callable[[], None]) -> None:
        self.cache = PagedKVCache(capacity_tokens, block_size)
        self.capacity_tokens = capacity_tokens
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.chunk_tokens = chunk_tokens
        self.used_tokens = 0
        self.peak_tokens = 0
        self.prefix_hit_tokens = 0  # prompt tokens found in cached prefix blocks
        self.prompt_tokens_admitted = 0  # prompt tokens (re-)admitted, hits included
        self._advance = advance

    def fits_alone(self, s) -> bool:
        """Whether ``s``'s whole lifetime fits, in blocks, in an empty cache."""
        return self.cache.blocks(s.kv_tokens) * self.block_size <= self.capacity_tokens

    def block_tokens(self, tokens: int) -> int:
        """``tokens`` rounded up to whole blocks."""
        return self.cache.blocks(tokens) * self.block_size

    def can_swap_in(self, s) -> bool:
        """Whether the free blocks hold swapped-out ``s``'s KV."""
        return s.swapped_tokens <= self.cache.free_blocks * self.block_size

    def can_admit(self, s) -> bool:
        """Whether the free blocks hold ``s``'s first prefill chunk."""
        return self.cache.free_blocks * self.block_size >= min(s.target, self.chunk_tokens)

    def grow(self, s, tokens: int) -> bool:
        """Room for ``tokens`` tokens of ``s`` (blocks allocated now; those in a cached
        prefix it uses are not its own); False, nothing allocated, if they do not fit."""
        held = self.cache.grow(s.blocks, tokens - s.shared_tokens)
        if held is None:
            if self.cache.used_tokens != self.used_tokens:  # it evicted cached prefixes, then fell short
                self._advance()
                self.used_tokens = self.cache.used_tokens
            return False
        if held != s.blocks:
            self._advance()
            s.blocks = held
            self.used_tokens = self.cache.used_tokens
            if self.used_tokens > self.peak_tokens:
                self.peak_tokens = self.used_tokens
        return True

    def free(self, s) -> None:
        """``s`` finished or is preempted: its own blocks are free, and it stops using
        its cached prefix."""
        self.cache.release(s.blocks)
        s.blocks = 0
        if s.shared_tokens:
            self.cache.unref(s.request.prefix_id)
            s.shared_tokens = 0
        self.used_tokens = self.cache.used_tokens

    def prefix_hit(self, s) -> None:
        """Prefix caching, at admission: the cached full blocks of ``s``'s prefix are
        its first tokens (at least one prompt token is still computed, as in vLLM)."""
        r = s.request
        self.prompt_tokens_admitted += s.target
        if not (self.enable_prefix_caching and r.prefix_id >= 0):
            return
        usable = min(r.prefix_len, s.target - 1) // self.block_size
        cached = self.cache.lookup(r.prefix_id)
        if not cached:
            return
        if cached > usable:  # cannot use them (a prompt shorter than the prefix's blocks)
            self.cache.unref(r.prefix_id)
            return
        s.shared_tokens = s.computed = cached * self.block_size
        self.prefix_hit_tokens += s.computed

    def undo_prefix_hit(self, s) -> None:
        """``s`` was not admitted after all (its first chunk's blocks did not fit)."""
        self.prompt_tokens_admitted -= s.target
        if s.shared_tokens:
            self.prefix_hit_tokens -= s.shared_tokens
            self.cache.unref(s.request.prefix_id)
            s.shared_tokens = s.computed = 0

    def prefix_computed(self, s) -> None:
        """Prefix caching: ``s`` computed its prefix's full blocks itself; they stay
        cached under the prefix's id (unless another request cached them first)."""
        r = s.request
        blocks = r.prefix_len // self.block_size
        if (self.enable_prefix_caching and r.prefix_id >= 0 and not s.shared_tokens and blocks
                and s.computed >= blocks * self.block_size and s.blocks >= blocks
                and self.cache.register(r.prefix_id, blocks)):
            s.blocks -= blocks
            s.shared_tokens = blocks * self.block_size
