"""Workloads: which requests arrive when, with what prompt and output lengths.

A workload is a list of :class:`Request` built from its own random stream, so the two
arms of a sweep point see the very same requests (common random numbers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Request:
    """One inference request. Lengths are tokens; ``arrival_s`` is simulated seconds."""

    request_id: int
    arrival_s: float
    prompt_len: int
    output_len: int


def closed_workload(num_requests: int, prompt_len: int, output_len: int,
                    rng: np.random.Generator | None = None) -> list[Request]:
    """``num_requests`` requests, all waiting at time 0, every one with the same prompt
    and output length (the setting of the Medusa figure: a fixed batch that never
    waits for arrivals). ``rng`` is accepted for a uniform signature and not used."""
    return [Request(i, 0.0, prompt_len, output_len) for i in range(num_requests)]
