"""Trace formats: files of requests as users keep them, turned into servesim's columns.

Every format becomes one table with ``prompt_len`` and ``output_len`` (tokens) and,
where the file has times, ``arrival_s`` (seconds from its first request); the checks
of :func:`servesim.inputs.read_trace_columns` then apply to all of them alike.

``servesim``     CSV / Parquet / JSON lines with ``arrival_s``, ``prompt_len``,
                 ``output_len`` (optional ``prefix_id``, ``prefix_len``);
``columns``      the same layouts with other column names, mapped by
                 ``workload.trace_columns`` (``{arrival_s = "ts", prompt_len = "in", ...}``);
                 an arrival column of date-times is read as seconds from the first;
``azure``        the Azure LLM inference trace CSV (``TIMESTAMP``, ``ContextTokens``,
                 ``GeneratedTokens``; Patel et al., Splitwise, 2023/2024);
``sharegpt``     ShareGPT-style JSON: a list of ``{"conversations": [{"from", "value"}, ...]}``;
                 as vLLM's ShareGPT dataset does, the first turn is the prompt and the
                 second the output, entries with fewer turns are skipped. No tokenizer
                 is bundled: tokens are estimated as ceil(characters / 4) (at least 1),
                 the usual rule of thumb for English text with Llama/GPT tokenizers; no
                 times (arrivals come from ``workload.arrival``);
``vllm_result``  a ``vllm bench serve --save-result --save-detailed`` file:
                 ``input_lens``, ``output_lens`` and, if present, ``start_times`` (as
                 arrivals); requests that failed (output length 0 or an error) are
                 left out, as vLLM's own metrics leave them out.
``auto`` picks by content: a JSON object with ``input_lens`` is a vLLM result, a JSON
list a ShareGPT file, a table with ``TIMESTAMP`` and ``ContextTokens`` an Azure trace,
anything else servesim's columns (mapped if ``trace_columns`` is given).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from servesim.inputs import InputError, read_table

FORMATS = ("auto", "servesim", "azure", "sharegpt", "vllm_result")
TRACE_FIELDS = ("arrival_s", "prompt_len", "output_len", "prefix_id", "prefix_len")
CHARS_PER_TOKEN = 4
"""Characters per token of the ShareGPT estimate (see module docstring)."""


def estimate_tokens(text: str) -> int:
    """Tokens of a text by the ceil(characters / 4) estimate, at least 1."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: not valid JSON: {e}") from None


def _seconds(series: pd.Series, path, column: str) -> np.ndarray:
    """A time column in seconds: numbers as they are, date-time strings as seconds
    since the earliest one."""
    numbers = pd.to_numeric(series, errors="coerce")
    if numbers.notna().all():
        return np.asarray(numbers, dtype=np.float64)
    times = pd.to_datetime(series, errors="coerce")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna().to_numpy())[0])
        raise InputError(f"{path}: row {row + 1}, column {column!r}: {series.iloc[row]!r} is neither a time in "
                         "seconds nor a date-time")
    return (times - times.min()).dt.total_seconds().to_numpy()


def _azure(frame: pd.DataFrame, path) -> pd.DataFrame:
    for column in ("TIMESTAMP", "ContextTokens", "GeneratedTokens"):
        if column not in frame.columns:
            raise InputError(f"{path}: missing column {column!r} of the Azure trace format "
                             f"(columns: {', '.join(map(str, frame.columns))})")
    return pd.DataFrame({"arrival_s": _seconds(frame["TIMESTAMP"], path, "TIMESTAMP"),
                         "prompt_len": frame["ContextTokens"], "output_len": frame["GeneratedTokens"]})


def _mapped(frame: pd.DataFrame, path, columns: dict) -> pd.DataFrame:
    out = {}
    for field, column in columns.items():
        if column not in frame.columns:
            raise InputError(f"{path}: trace_columns maps {field} to {column!r}, which is not a column "
                             f"(columns: {', '.join(map(str, frame.columns))})")
        out[field] = (_seconds(frame[column], path, column) if field == "arrival_s" else frame[column])
    for field in ("arrival_s", "prompt_len", "output_len"):
        if field not in out and field in frame.columns:
            out[field] = frame[field]
    return pd.DataFrame(out)


def _sharegpt(data, path) -> pd.DataFrame:
    if not isinstance(data, list):
        raise InputError(f"{path}: a ShareGPT file is a JSON list of conversations")
    prompts, outputs = [], []
    for i, entry in enumerate(data):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise InputError(f"{path}: entry {i + 1} has no 'conversations' list")
        if len(turns) < 2:
            continue
        texts = [t.get("value") if isinstance(t, dict) else None for t in turns[:2]]
        if not all(isinstance(t, str) for t in texts):
            raise InputError(f"{path}: entry {i + 1}: a turn without a text 'value'")
        prompts.append(estimate_tokens(texts[0]))
        outputs.append(estimate_tokens(texts[1]))
    if not prompts:
        raise InputError(f"{path}: no conversation with two turns (a prompt and an answer)")
    return pd.DataFrame({"prompt_len": prompts, "output_len": outputs})


def _vllm_result(data: dict, path) -> pd.DataFrame:
    for key in ("input_lens", "output_lens"):
        if not isinstance(data.get(key), list):
            raise InputError(f"{path}: no '{key}' list: save the benchmark with "
                             "`vllm bench serve --save-result --save-detailed`")
    n = len(data["input_lens"])
    if len(data["output_lens"]) != n:
        raise InputError(f"{path}: 'input_lens' has {n} entries, 'output_lens' {len(data['output_lens'])}")
    frame = pd.DataFrame({"prompt_len": data["input_lens"], "output_len": data["output_lens"]})
    starts = data.get("start_times")
    if isinstance(starts, list) and len(starts) == n and starts:
        frame["arrival_s"] = pd.to_numeric(pd.Series(starts), errors="coerce")
    ok = pd.to_numeric(frame["output_len"], errors="coerce").fillna(0) > 0
    errors = data.get("errors")
    if isinstance(errors, list) and len(errors) == n:
        ok &= pd.Series([not e for e in errors])
    frame = frame[ok.to_numpy()].reset_index(drop=True)
    if "arrival_s" in frame:
        frame["arrival_s"] = frame["arrival_s"] - frame["arrival_s"].min()
        frame = frame.sort_values("arrival_s", kind="stable").reset_index(drop=True)
    if frame.empty:
        raise InputError(f"{path}: no successful request (every output length is 0)")
    return frame


def detect_format(path: Path) -> str:
    """The format ``auto`` picks (see module docstring)."""
    if path.suffix.lower() == ".json":
        data = _read_json(path)
        return "vllm_result" if isinstance(data, dict) and "input_lens" in data else "sharegpt"
    if path.suffix.lower() in (".csv", ".txt"):
        with open(path, encoding="utf-8", errors="replace") as f:
            header = f.readline()
        if "TIMESTAMP" in header and "ContextTokens" in header:
            return "azure"
    return "servesim"


def read_trace_frame(path: str | Path, trace_format: str = "auto", columns: dict | None = None) -> pd.DataFrame:
    """The trace at ``path`` in servesim's columns (``TRACE_FIELDS`` it has)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if trace_format == "auto":
        trace_format = detect_format(path)
    if trace_format == "sharegpt":
        return _sharegpt(_read_json(path), path)
    if trace_format == "vllm_result":
        data = _read_json(path)
        if not isinstance(data, dict):
            raise InputError(f"{path}: a vllm bench serve result is a JSON object")
        return _vllm_result(data, path)
    frame = read_table(path)
    if trace_format == "azure":
        return _azure(frame, path)
    return _mapped(frame, path, columns) if columns else frame
