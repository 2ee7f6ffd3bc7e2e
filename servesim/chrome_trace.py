"""A point's run as a Chrome / Perfetto trace (the JSON "Trace Event Format").

Open the file in https://ui.perfetto.dev or chrome://tracing. One process per arm
(``baseline``, ``spec``); in each, a ``GPU`` thread with one complete event (``X``) per
GPU stage (name = stage, args = batch size, tokens, speculation length, context), and
one async track per request with its phases as nested async events (``b``/``e``):
``queued`` (arrival -> first stage), ``prefill`` (-> first token) and ``decode``
(-> last token); args carry the request's lengths, status and preemptions. Times are
simulated microseconds. Built from the run's ``steps.parquet`` and ``requests.parquet``
(replication 0 unless asked), so a run sampled with ``sample_every`` shows its sample.
"""

from __future__ import annotations

import math

import pandas as pd

ARMS = {"baseline": 1, "spec": 2}


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def trace_events(steps: pd.DataFrame, requests: pd.DataFrame) -> list[dict]:
    """Trace events of one point's steps and requests (one replication)."""
    events: list[dict] = []
    for arm, pid in ARMS.items():
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": arm}})
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": 0, "args": {"name": "GPU"}})
    for row in steps.itertuples(index=False):
        events.append({"name": row.stage, "cat": "gpu", "ph": "X", "pid": ARMS[row.arm], "tid": 0,
                       "ts": _us(row.start_s), "dur": _us(row.duration_s),
                       "args": {"batch_size": int(row.batch_size), "tokens_per_seq": int(row.tokens_per_seq),
                                "tokens_generated": int(row.tokens_generated),
                                "prefill_tokens": int(row.prefill_tokens),
                                "context_tokens": int(row.context_tokens), "spec_length": int(row.spec_length)}})
    for row in requests.itertuples(index=False):
        if math.isnan(row.arrival_s):
            continue
        pid = ARMS[row.arm]
        ident = f"{row.arm}-{row.request_id}"
        args = {"prompt_len": int(row.prompt_len), "output_len": int(row.output_len), "status": row.status,
                "preemptions": int(row.preemptions)}
        phases = [("queued", row.arrival_s, row.start_s), ("prefill", row.start_s, row.first_token_s),
                  ("decode", row.first_token_s, row.finish_s)]
        name = f"request {row.request_id}"
        end = max((t for _, _, t in phases if not math.isnan(t)), default=row.arrival_s)
        events.append({"name": name, "cat": "request", "ph": "b", "id": ident, "pid": pid,
                       "ts": _us(row.arrival_s), "args": args})
        for phase, start, stop in phases:
            if math.isnan(start) or math.isnan(stop):
                continue
            events.append({"name": phase, "cat": "request", "ph": "b", "id": ident, "pid": pid, "ts": _us(start)})
            events.append({"name": phase, "cat": "request", "ph": "e", "id": ident, "pid": pid, "ts": _us(stop)})
        events.append({"name": name, "cat": "request", "ph": "e", "id": ident, "pid": pid, "ts": _us(end)})
    return events
