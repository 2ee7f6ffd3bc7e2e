"""Workloads: which requests arrive when, with what prompt and output lengths.

A workload is built from its own random streams (arrivals, prompt lengths, output
lengths, think times: four independent streams spawned from one seed), so the two arms
of a sweep point see the very same requests (common random numbers).

Arrival processes
    ``closed``       all ``num_requests`` wait at time 0 (a fixed batch that never waits);
    ``closed_loop``  ``clients`` clients each send a request, wait for its last token,
                     think (exponential, mean ``think_time_s``; 0 = none) and send the
                     next; arrival times are set by the engine;
    ``poisson``      exponential inter-arrival times at ``rate_per_s``;
    ``gamma``        gamma inter-arrival times with mean 1/``rate_per_s`` and
                     coefficient of variation ``cv`` (cv > 1 is burstier than Poisson);
    ``trace``        replay of a trace file's arrivals and lengths, in any format of
                     :mod:`servesim.traces` (servesim's columns, mapped columns, Azure,
                     vLLM bench results); with another process and a ``trace_file``,
                     the trace gives only the lengths (ShareGPT has no times).

Length distributions (prompt and output alike; all lengths are integers >= 1)
    ``fixed``        the scenario's ``seq_len`` / ``output_len``;
    ``uniform``      integers in [min, max];
    ``lognormal``    median ``seq_len`` / ``output_len``, log-space sigma, rounded;
    ``geometric``    on {1, 2, ...} with mean ``seq_len`` / ``output_len``;
    ``empirical``    resampled (with replacement) from a column of a CSV/Parquet file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from servesim.inputs import MAX_TOKENS, InputError, length_column, read_trace_columns


class Request(NamedTuple):
    """One inference request. Lengths are tokens; ``arrival_s`` is simulated seconds
    (for closed-loop workloads, the engine sets the real arrival).

    A named tuple rather than a frozen dataclass: a long run makes one per request and
    arm, and a frozen dataclass's ``__init__`` (a ``object.__setattr__`` per field) costs
    several times as much.
    """

    request_id: int
    arrival_s: float
    prompt_len: int
    output_len: int
    think_time_s: float = 0.0
    prefix_id: int = -1
    """The shared prefix its prompt begins with (-1: none); ``prefix_len`` tokens long."""
    prefix_len: int = 0


class RequestColumns(Sequence):
    """Requests kept as columns (numpy arrays), request ``i`` made when asked for.

    A million requests take 28 MB this way, and about 190 MB as ``Request`` objects.
    """

    CHUNK = 4096  # requests turned into Python values at a time when iterating

    def __init__(self, arrival_s: np.ndarray, prompt_len: np.ndarray, output_len: np.ndarray,
                 think_time_s: np.ndarray, prefix_id: np.ndarray | None = None,
                 prefix_len: np.ndarray | None = None) -> None:
        self.arrival_s = np.asarray(arrival_s, dtype=np.float64)
        self.prompt_len = np.asarray(prompt_len, dtype=np.int64)
        self.output_len = np.asarray(output_len, dtype=np.int64)
        self.think_time_s = np.asarray(think_time_s, dtype=np.float64)
        n = len(self.arrival_s)
        self.prefix_id = np.full(n, -1, dtype=np.int64) if prefix_id is None else np.asarray(prefix_id, np.int64)
        self.prefix_len = np.zeros(n, dtype=np.int64) if prefix_len is None else np.asarray(prefix_len, np.int64)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return Request(i, float(self.arrival_s[i]), int(self.prompt_len[i]), int(self.output_len[i]),
                       float(self.think_time_s[i]), int(self.prefix_id[i]), int(self.prefix_len[i]))

    def __iter__(self) -> Iterator[Request]:
        for start in range(0, len(self), self.CHUNK):
            end = start + self.CHUNK
            columns = (self.arrival_s[start:end].tolist(), self.prompt_len[start:end].tolist(),
                       self.output_len[start:end].tolist(), self.think_time_s[start:end].tolist(),
                       self.prefix_id[start:end].tolist(), self.prefix_len[start:end].tolist())
            for i, (t, p, o, z, k, n) in enumerate(zip(*columns), start):
                yield Request(i, t, p, o, z, k, n)


@dataclass(frozen=True)
class Workload:
    """Requests in id order (a tuple, or :class:`RequestColumns`); ``clients`` > 0
    means a closed loop of that many clients."""

    requests: Sequence[Request]
    clients: int = 0
    capped: int = 0
    """Requests whose drawn lengths were cut to the model's maximum context."""


TraceError = InputError
"""A trace or length file is malformed (see :mod:`servesim.inputs`)."""


def read_trace(path: str | Path, trace_format: str = "auto", columns: dict | None = None) -> list[Request]:
    """Requests from a trace file with arrival times (any format of
    :mod:`servesim.traces`; checked by :func:`servesim.inputs.read_trace_columns`)."""
    columns = read_trace_columns(path, trace_format, columns)
    arrivals, prompts, outputs = columns[:3]
    if arrivals is None:
        raise InputError(f"{path}: the file has no arrival times; use another workload.arrival "
                         "(poisson, gamma, closed, closed_loop) to take only its lengths")
    if len(columns) == 5:
        prefix_id, prefix_len = columns[3].tolist(), columns[4].tolist()
    else:
        prefix_id, prefix_len = [-1] * len(arrivals), [0] * len(arrivals)
    return [Request(i, float(a), int(p), int(o), 0.0, int(k), int(n))
            for i, (a, p, o, k, n) in enumerate(zip(arrivals.tolist(), prompts.tolist(), outputs.tolist(),
                                                   prefix_id, prefix_len))]


def trace_lengths(path: str | Path, n: int, trace_format: str = "auto",
                  columns: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of ``n`` requests from a trace's rows, in file order
    (repeated from the start if it has fewer): the lengths of a trace under another
    arrival process."""
    _, prompts, outputs = read_trace_columns(path, trace_format, columns)[:3]
    rows = np.arange(n) % len(prompts)
    return prompts[rows].copy(), outputs[rows].copy()


def draw_lengths(rng: np.random.Generator, n: int, dist: str, center: int, low: int, high: int,
                 sigma: float, file: str, column: str) -> np.ndarray:
    """``n`` integer lengths >= 1 from the named distribution (see module docstring)."""
    if dist == "fixed":
        return np.full(n, center, dtype=np.int64)
    if dist == "uniform":
        return rng.integers(low, high + 1, size=n)
    if dist == "lognormal":  # clipped to [1, MAX_TOKENS] before the integer conversion
        with np.errstate(over="ignore"):
            drawn = center * np.exp(sigma * rng.standard_normal(n))
        return np.clip(np.rint(drawn), 1, MAX_TOKENS).astype(np.int64)
    if dist == "geometric":
        return rng.geometric(1.0 / center, size=n).astype(np.int64)
    if dist == "empirical":
        return rng.choice(length_column(file, column), size=n, replace=True)
    raise ValueError(f"unknown length distribution {dist!r}")


def arrival_times(rng: np.random.Generator, n: int, process: str, rate_per_s: float,
                  cv: float) -> np.ndarray:
    """Arrival times (s) of ``n`` requests of an open arrival process, the first at its
    first inter-arrival time."""
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate_per_s, size=n)
    elif process == "gamma":
        shape = 1.0 / cv ** 2  # gamma with mean 1/rate and CV cv: shape 1/cv^2, scale cv^2/rate
        gaps = rng.gamma(shape, 1.0 / (rate_per_s * shape), size=n)
    else:
        raise ValueError(f"unknown arrival process {process!r}")
    return np.cumsum(gaps)


def cap_to_context(prompts: np.ndarray, outputs: np.ndarray, max_context_tokens: int) -> int:
    """Cut drawn lengths, in place, so that prompt + output <= ``max_context_tokens``
    (0 = no limit), as a server with that ``max_model_len`` would: a prompt to at most
    max - 1 tokens, then the output to what is left. Returns how many requests were cut."""
    if not max_context_tokens:
        return 0
    over = prompts + outputs > max_context_tokens
    if over.any():
        np.minimum(prompts, max_context_tokens - 1, out=prompts)
        np.minimum(outputs, max_context_tokens - prompts, out=outputs)
    return int(over.sum())


def build_workload(values: dict, seed: np.random.SeedSequence, max_context_tokens: int = 0) -> Workload:
    """The workload of a sweep point from its scenario values (keys of [workload]);
    lengths drawn from a distribution are capped at ``max_context_tokens``
    (:func:`cap_to_context`); fixed ones and a trace's are kept as written."""
    # (spawned children are numbered: adding the fifth leaves the first four's draws alone)
    arrivals_seq, prompt_seq, output_seq, think_seq, prefix_seq = seed.spawn(5)
    v = values
    if v["arrival"] == "trace":
        return Workload(tuple(read_trace(v["trace_file"], v["trace_format"], v["trace_columns"] or None)))
    n = v["num_requests"]
    if v["trace_file"]:  # the trace's lengths, the scenario's arrival process
        prompts, outputs = trace_lengths(v["trace_file"], n, v["trace_format"], v["trace_columns"] or None)
        drawn = False
    else:
        prompts = draw_lengths(np.random.default_rng(prompt_seq), n, v["prompt_dist"], v["seq_len"],
                               v["prompt_min"], v["prompt_max"], v["prompt_sigma"], v["prompt_file"],
                               v["prompt_column"])
        outputs = draw_lengths(np.random.default_rng(output_seq), n, v["output_dist"], v["output_len"],
                               v["output_min"], v["output_max"], v["output_sigma"], v["output_file"],
                               v["output_column"])
        drawn = v["prompt_dist"] != "fixed" or v["output_dist"] != "fixed"  # (fixed lengths are the user's own)
    capped = cap_to_context(prompts, outputs, max_context_tokens) if drawn else 0
    if v["arrival"] in ("closed", "closed_loop"):
        times = np.zeros(n)
    else:
        times = arrival_times(np.random.default_rng(arrivals_seq), n, v["arrival"],
                              v["rate_per_s"], v["cv"])
    think = np.zeros(n)
    if v["arrival"] == "closed_loop" and v["think_time_s"] > 0:
        think = np.random.default_rng(think_seq).exponential(v["think_time_s"], size=n)
    prefix_id = prefix_len = None
    if v["shared_prefix_tokens"]:
        # each prompt begins with one of num_prefixes shared prefixes, chosen uniformly
        prefix_id = np.random.default_rng(prefix_seq).integers(0, v["num_prefixes"], size=n)
        prefix_len = np.minimum(v["shared_prefix_tokens"], prompts)
    return Workload(RequestColumns(times, prompts, outputs, think, prefix_id, prefix_len),
                    v["clients"] if v["arrival"] == "closed_loop" else 0, capped)


def closed_workload(num_requests: int, prompt_len: int, output_len: int) -> Workload:
    """``num_requests`` requests, all waiting at time 0, all of the same lengths."""
    return Workload(tuple(Request(i, 0.0, prompt_len, output_len) for i in range(num_requests)))
