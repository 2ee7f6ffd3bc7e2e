"""The paged KV cache: fixed-size blocks allocated as tokens are appended (vLLM's
PagedAttention block manager, without prefix sharing).

A request holds ``ceil(tokens / block_size)`` blocks for the tokens whose K and V it
keeps; before a step it asks for the blocks its new tokens (and a speculative step's
lookahead slots) need, and gets them or not. Capacity is in tokens, as the rest of
servesim counts it (``kv_capacity_tokens``), rounded down to whole blocks. Plain
Python, no SimPy: the scheduler decides what to do when a request cannot grow
(preempt the most recently admitted running request, as vLLM does).
"""

from __future__ import annotations

import math


class PagedKVCache:
    """Block accounting of one GPU's KV cache (see module docstring)."""

    def __init__(self, capacity_tokens: float, block_size: int = 16) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.block_size = block_size
        self.total_blocks = math.inf if math.isinf(capacity_tokens) else int(capacity_tokens // block_size)
        self.used_blocks = 0

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
