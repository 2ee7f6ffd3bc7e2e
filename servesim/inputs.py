"""Every input file servesim reads, read and checked in one place.

Traces, length files, head-accuracy tables and acceptance curves all pass through
these readers, at validation time (before anything runs) and at run time alike. Each
reader either returns clean numpy data or raises :class:`InputError` with the file, the
column, the first bad row and what is allowed. Checks are vectorised (a 1,000,000-row
trace is checked in well under a second).

Bounds (documented in README's scenario reference):
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

MAX_TOKENS = 10_000_000
"""Largest prompt or output length, in tokens (any source: scenario, trace, length file)."""
MAX_REQUESTS = 10_000_000
"""Most requests per arm (``num_requests``, rows of a trace)."""
MAX_CANDIDATES = 1024
"""Most query tokens of one verify step (``candidate_tokens``, tree nodes + 1)."""
MAX_HEADS = 64
"""Most Medusa heads (rows of a head-accuracy table, ``num_heads``)."""
MAX_RANK = 1000
"""Largest rank in a tree path or a head-accuracy table (top-k columns)."""

__doc__ += f"""
* lengths: 1 .. {MAX_TOKENS:,} tokens; requests per arm: 1 .. {MAX_REQUESTS:,};
* verify width (candidate tokens): 1 .. {MAX_CANDIDATES}; Medusa heads: 1 .. {MAX_HEADS};
  top-k columns and tree ranks: below {MAX_RANK}.
"""


class InputError(ValueError):
    """An input file that cannot be used; the message names the file, column and row."""


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV (UTF-8) or Parquet file (by extension) as a DataFrame, with at least one row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    parquet = path.suffix.lower() in (".parquet", ".pq")
    jsonl = path.suffix.lower() in (".jsonl", ".ndjson")
    try:
        if jsonl:
            frame = pd.read_json(path, lines=True, encoding="utf-8")
        else:
            frame = pd.read_parquet(path) if parquet else pd.read_csv(path, encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text (byte {e.start}); a CSV must be UTF-8") from None
    except pd.errors.EmptyDataError:
        raise InputError(f"{path}: empty file (expected a header row and data rows)") from None
    except Exception as e:  # a parse error of any kind becomes one clear message
        raise InputError(f"{path}: cannot read as {'Parquet' if parquet else 'JSON lines' if jsonl else 'CSV'}: "
                         f"{e}") from None
    if len(frame) == 0:
        raise InputError(f"{path}: no data rows (columns: {', '.join(map(str, frame.columns))})")
    return frame


def _column(frame: pd.DataFrame, path, column: str) -> pd.Series:
    if column not in frame.columns:
        raise InputError(f"{path}: missing column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    return frame[column]


def _numbers(series: pd.Series) -> np.ndarray:
    """A column as float64 (unparseable entries NaN; huge integers, uint64 included, as
    their float value, so bounds catch them instead of wrapping)."""
    values = pd.to_numeric(series, errors="coerce")
    return np.asarray(values, dtype=np.float64)


def _first_bad(path, series: pd.Series, column: str, bad: np.ndarray, allowed: str) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise InputError(f"{path}: row {row + 1}, column {column!r}: {series.iloc[row]!r} is not {allowed} "
                         f"({int(bad.sum())} such row(s))")


def integer_column(frame: pd.DataFrame, path, column: str, low: int = 1, high: int = MAX_TOKENS) -> np.ndarray:
    """A column of integers in [low, high]; InputError naming file, row and column."""
    series = _column(frame, path, column)
    values = _numbers(series)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < low) | (values > high)
    _first_bad(path, series, column, bad, f"an integer in [{low}, {high:,}]")
    return values.astype(np.int64)


@lru_cache(maxsize=32)
def _cached_lengths(path: str, mtime_ns: int, column: str) -> np.ndarray:
    return integer_column(read_table(path), path, column)


def length_column(path: str, column: str) -> np.ndarray:
    """Lengths (tokens) to resample from, column ``column`` of a CSV/Parquet file
    (read once per file version)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return _cached_lengths(str(p), p.stat().st_mtime_ns, column)


def read_trace_columns(path: str | Path, trace_format: str = "auto",
                       columns: dict | None = None) -> tuple[np.ndarray | None, ...]:
    """Arrival times (s, finite, >= 0, non-decreasing; None for a format without times,
    such as ShareGPT), prompt and output lengths of a trace file in any of the formats
    of :mod:`servesim.traces`, and, if it has columns ``prefix_id`` (-1 = none) and
    ``prefix_len``, each prompt's shared prefix; read and checked once per file
    version, format and mapping (a sweep's points share it)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    mapping = tuple(sorted((columns or {}).items()))
    return _cached_trace(str(p), p.stat().st_mtime_ns, trace_format, mapping)


@lru_cache(maxsize=8)
def _cached_trace(path: str, mtime_ns: int, trace_format: str, mapping: tuple) -> tuple[np.ndarray | None, ...]:
    from servesim.traces import read_trace_frame

    frame = read_trace_frame(path, trace_format, dict(mapping))
    if len(frame) > MAX_REQUESTS:
        raise InputError(f"{path}: {len(frame):,} rows; at most {MAX_REQUESTS:,} requests per arm")
    arrivals = None
    if "arrival_s" in frame.columns:
        series = frame["arrival_s"]
        arrivals = _numbers(series)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(arrivals) | (arrivals < 0)
        _first_bad(path, series, "arrival_s", bad, "a finite time >= 0 (s)")
        earlier = np.flatnonzero(np.diff(arrivals) < 0)
        if earlier.size:
            row = int(earlier[0]) + 1
            raise InputError(f"{path}: row {row + 1}, column 'arrival_s': {arrivals[row]} is earlier than the row "
                             f"before ({arrivals[row - 1]}); arrivals must not decrease")
    prompts = integer_column(frame, path, "prompt_len")
    outputs = integer_column(frame, path, "output_len")
    if "prefix_id" in frame.columns or "prefix_len" in frame.columns:
        # optional: the shared prefix each prompt begins with (prefix caching)
        prefix_id = integer_column(frame, path, "prefix_id", -1, 2**62)
        prefix_len = integer_column(frame, path, "prefix_len", 0, MAX_TOKENS)
        over = prefix_len > prompts
        if over.any():
            row = int(np.flatnonzero(over)[0])
            raise InputError(f"{path}: row {row + 1}, column 'prefix_len': {prefix_len[row]} exceeds the row's "
                             f"prompt_len {prompts[row]}")
        return arrivals, prompts, outputs, prefix_id, prefix_len
    return arrivals, prompts, outputs


def read_head_accuracy(path: str | Path) -> np.ndarray:
    """Cumulative top-k accuracies of Medusa heads from a CSV with columns ``head``
    (0, 1, ... each once) and ``top1``, ``top2``, ... (consecutive from 1); returns the
    array [head, k], every value in [0, 1] and non-decreasing in k."""
    frame = read_table(path)
    heads = integer_column(frame, path, "head", 0, MAX_HEADS - 1)
    tops = [c for c in frame.columns if isinstance(c, str) and c.startswith("top") and c[3:].isdigit()]
    ks = sorted(int(c[3:]) for c in tops)
    if not ks:
        raise InputError(f"{path}: no top-k columns (expected top1, top2, ...; columns: "
                         f"{', '.join(map(str, frame.columns))})")
    if ks != list(range(1, len(ks) + 1)) or len(ks) >= MAX_RANK:
        raise InputError(f"{path}: top-k columns must be top1, top2, ... consecutive (below top{MAX_RANK}), got "
                         f"{', '.join(f'top{k}' for k in ks)}")
    if sorted(heads.tolist()) != list(range(len(heads))):
        raise InputError(f"{path}: column 'head': heads must be 0, 1, ..., each once, got {sorted(heads.tolist())}")
    values = np.empty((len(frame), len(ks)))
    for j, k in enumerate(ks):
        series = frame[f"top{k}"]
        column = _numbers(series)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(column) | (column < 0) | (column > 1)
        _first_bad(path, series, f"top{k}", bad, "an accuracy in [0, 1]")
        values[:, j] = column
    falls = np.diff(values, axis=1) < 0
    if falls.any():
        row, j = map(int, np.argwhere(falls)[0])
        raise InputError(f"{path}: row {row + 1}: top{j + 2} ({values[row, j + 1]}) is below top{j + 1} "
                         f"({values[row, j]}); cumulative accuracies must not fall with k")
    return values[np.argsort(heads)]


def read_acceptance_curve(path: str | Path) -> dict[int, float]:
    """Mean tokens per verify step by candidate tokens, from a CSV with columns
    ``candidate_tokens`` (integers in [1, MAX_CANDIDATES], each once) and
    ``acceptance_rate`` (finite, in [1, candidate_tokens]: a step yields at least the
    root's token and at most one per candidate)."""
    frame = read_table(path)
    n = integer_column(frame, path, "candidate_tokens", 1, MAX_CANDIDATES)
    series = _column(frame, path, "acceptance_rate")
    rate = _numbers(series)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(rate) | (rate < 1) | (rate > n)
    _first_bad(path, series, "acceptance_rate", bad, "a mean in [1, candidate_tokens] tokens per step")
    if len(set(n.tolist())) != len(n):
        raise InputError(f"{path}: column 'candidate_tokens': each value must appear once")
    return dict(zip(n.tolist(), rate.tolist()))


@lru_cache(maxsize=8)
def _cached_acceptance_trace(path: str, mtime_ns: int) -> tuple[np.ndarray, ...]:
    frame = read_table(path)
    ids = integer_column(frame, path, "request_id", low=0, high=2**62)
    accepted = integer_column(frame, path, "num_accepted_tokens", low=0, high=MAX_CANDIDATES)
    order = np.argsort(ids, kind="stable")  # steps keep their file order within a request
    if "step" in frame.columns:
        steps = integer_column(frame, path, "step", low=0, high=2**62)
        order = np.lexsort((steps, ids))
    ids, accepted = ids[order], accepted[order]
    cuts = np.flatnonzero(np.diff(ids)) + 1
    return tuple(np.split(accepted, cuts))


def read_acceptance_trace(path: str | Path) -> list[np.ndarray]:
    """Measured acceptance per step: a CSV, Parquet or JSON-lines file with columns
    ``request_id`` and ``num_accepted_tokens`` (draft tokens the step accepted, vLLM's
    name; 0 = only the target's own token) and optionally ``step`` (order within a
    request; default the file's order). Returns each request's steps, by request id."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    return list(_cached_acceptance_trace(str(p), p.stat().st_mtime_ns))
