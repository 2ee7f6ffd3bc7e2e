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
"""

from __future__ import annotations

import math
from collections import OrderedDict


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
