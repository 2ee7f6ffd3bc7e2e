"""Measured kernel tables: the format ``servesim profile`` writes and ``servesim
calibrate`` reads, and the cost model's prediction of every row.

A kernel table is a CSV (optionally gzipped) with one row per measured kernel call of
one layer, ``latency_s`` seconds, and these columns (unused ones empty):

========================  ==================================================================
``gpu``                   the GPU (aiconfigurator folder name, e.g. ``h100_sxm``, or any label)
``framework``             ``vllm`` | ``sglang`` | ``trtllm`` | ``torch`` ... (whose kernels)
``version``               the framework's version
``op``                    ``gemm`` | ``fp8_gemm`` | ``decode_attention`` | ``decode_attention_fp8_kv`` |
                          ``prefill_attention`` | ``prefill_attention_fp8_kv`` | ``elementwise`` | ``allreduce``
``m``, ``n``, ``k``       gemm ``y[m, n] = x[m, k] W[k, n]`` (``m`` tokens); fp8_gemm: the same shape as an FP8
                          linear layer (16-bit ``x`` quantized to FP8, then the FP8 GEMM, both in the time);
                          elementwise: ``m`` x ``k`` elements;
                          allreduce: ``m`` elements over ``n`` GPUs
``batch_size``            attention: sequences
``seq_len``               prefill attention: prompt tokens per sequence (no cached prefix, causal)
``kv_len``                decode attention: keys read per sequence (cached tokens + the new one);
                          ``decode_attention_fp8_kv``: the same over an FP8 KV cache (16-bit queries);
                          ``prefill_attention_fp8_kv``: prefill attention writing an FP8 KV cache
``num_heads``             attention: query heads
``num_kv_heads``          attention: key/value heads (grouped-query attention when fewer)
``head_dim``              attention: head dimension
``bytes_per_element``     elementwise: bytes moved per element (read + write); allreduce: bytes per element
``latency_s``             the measured time of one call (s)
``warmup_calls``          how the microbenchmark ran (optional): calls of the kernel run back to back before
                          its timed window (default 0) ...
``timed_calls``           ... and in it, ``latency_s`` their mean (default 1); GEMMs of long sustained runs
                          are read with the GPU's power-throttled clock (``gemm_power_throttle_onset_s``)
``source``                where the row comes from (free text)
========================  ==================================================================

All tensors are 16-bit (bf16/fp16) unless the op (``fp8_gemm``) or ``bytes_per_element``
says otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from servesim.cost import kernels

OPS = ("gemm", "decode_attention", "prefill_attention", "elementwise", "allreduce", "fp8_gemm",
       "decode_attention_fp8_kv", "prefill_attention_fp8_kv")
COLUMNS = ("gpu", "framework", "version", "op", "m", "n", "k", "batch_size", "seq_len", "kv_len",
           "num_heads", "num_kv_heads", "head_dim", "bytes_per_element", "latency_s", "warmup_calls", "timed_calls",
           "source")
REQUIRED = {"gemm": ("m", "n", "k"), "fp8_gemm": ("m", "n", "k"),
            "decode_attention": ("batch_size", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
            "decode_attention_fp8_kv": ("batch_size", "kv_len", "num_heads", "num_kv_heads", "head_dim"),
            "prefill_attention": ("batch_size", "seq_len", "num_heads", "num_kv_heads", "head_dim"),
            "prefill_attention_fp8_kv": ("batch_size", "seq_len", "num_heads", "num_kv_heads", "head_dim"),
            "elementwise": ("m", "k", "bytes_per_element"),
            "allreduce": ("m", "n", "bytes_per_element")}
FRAMEWORK_NAMES = {"VLLM": "vllm", "TRTLLM": "trtllm", "SGLang": "sglang", "SGLANG": "sglang"}
DTYPE_BYTES = 2


class KernelTableError(ValueError):
    """A kernel table that cannot be read (names the file, the column and the rows)."""


def read_kernel_table(path: str | Path) -> pd.DataFrame:
    """Read and check a kernel table (see the module docstring)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path, low_memory=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, EOFError) as e:
        raise KernelTableError(f"{path}: cannot read kernel table: {e}") from None
    return check_kernel_table(frame, str(path))


INTEGER_COLUMNS = ("m", "n", "k", "batch_size", "seq_len", "kv_len", "num_heads", "num_kv_heads", "head_dim",
                   "warmup_calls", "timed_calls")


def write_kernel_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a kernel table as CSV: shape columns as integers (a message of 2^20
    elements stays 1048576, not 1.04858e+06), times to 6 significant digits."""
    out = frame.reindex(columns=list(COLUMNS)).copy()
    for column in INTEGER_COLUMNS:
        out[column] = pd.to_numeric(out[column], errors="coerce").round().astype("Int64")
    out.to_csv(path, index=False, float_format="%.6g")


def check_kernel_table(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """The table with columns in order, framework names normalised and every row
    checked: known op, its shape columns positive integers, latency finite and > 0."""
    missing = [c for c in ("op", "latency_s") if c not in frame.columns]
    if missing:
        raise KernelTableError(f"{source}: missing column(s) {', '.join(missing)}; "
                               f"a kernel table has columns {', '.join(COLUMNS)}")
    if frame.empty:
        raise KernelTableError(f"{source}: no rows")
    frame = frame.reindex(columns=list(COLUMNS)).copy()
    for column in ("gpu", "framework", "version", "source"):
        frame[column] = [("" if pd.isna(v) else str(v)) for v in frame[column]]
    frame["framework"] = frame["framework"].replace(FRAMEWORK_NAMES).str.lower()
    bad = ~frame["op"].isin(OPS)
    if bad.any():
        raise KernelTableError(f"{source}: column op: {frame['op'][bad].iloc[0]!r} in {int(bad.sum())} row(s); "
                               f"allowed: {', '.join(OPS)}")
    latency = pd.to_numeric(frame["latency_s"], errors="coerce")
    bad = ~(np.isfinite(latency) & (latency > 0))
    if bad.any():
        raise KernelTableError(f"{source}: column latency_s: {int(bad.sum())} row(s) not a finite number > 0 "
                               f"(first at row {int(np.flatnonzero(bad)[0]) + 2})")
    frame["latency_s"] = latency
    for op, columns in REQUIRED.items():
        rows = frame["op"] == op
        for column in columns:
            values = pd.to_numeric(frame.loc[rows, column], errors="coerce")
            bad = ~(np.isfinite(values) & (values >= 1) & (values <= 2**40) & (values == np.round(values)))
            if bad.any():
                raise KernelTableError(f"{source}: column {column}: {int(bad.sum())} {op} row(s) not a "
                                       f"positive integer (at most 2^40)")
            frame.loc[rows, column] = values
    for column, least in (("warmup_calls", 0), ("timed_calls", 1)):
        values = pd.to_numeric(frame[column], errors="coerce")
        given = frame[column].notna() & (frame[column].astype(str).str.strip() != "")
        bad = given & ~(np.isfinite(values) & (values >= least) & (values <= 2**31) & (values == np.round(values)))
        if bad.any():
            raise KernelTableError(f"{source}: column {column}: {int(bad.sum())} row(s) not an integer >= {least} "
                                   f"(or empty)")
    for column in (*INTEGER_COLUMNS, "bytes_per_element"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def predict(frame: pd.DataFrame, gpu, profile, l2_resident: bool = True) -> np.ndarray:
    """The cost model's time (s) of every row of a kernel table, as the measurement
    made it (``l2_resident``: a microbenchmark re-runs each kernel on the same
    tensors; see ``KernelProfile.l2_bandwidth_ratio``)."""
    out = np.full(len(frame), np.nan)
    op = frame["op"].to_numpy()
    for name in OPS:
        rows = op == name
        if not rows.any():
            continue
        d = frame[rows]
        out[rows] = predict_op(name, d, gpu, profile, l2_resident)
    return out


def predict_op(name: str, d, gpu, profile, l2_resident: bool = True) -> np.ndarray:
    """:func:`predict` for rows of one op (``d``: the rows, or their :func:`op_columns`)."""
    return _evaluate(name, d, gpu, profile, l2_resident)[1]


def hbm_bytes_op(name: str, d, gpu, profile) -> np.ndarray:
    """The HBM bytes the cost model moves for each row of one op (0 for all-reduce,
    whose bytes cross the interconnect)."""
    return _evaluate(name, d, gpu, profile, False)[0]


def op_columns(name: str, d: pd.DataFrame) -> dict[str, np.ndarray]:
    """The columns the cost model reads for rows of one op, as numpy arrays (missing
    repetition counts filled: no warm-up, one timed call). A fit evaluates the same rows
    thousands of times; it extracts them once."""
    if isinstance(d, dict):
        return d
    if name in ("gemm", "fp8_gemm"):
        columns = {c: d[c].to_numpy(np.int64) for c in ("m", "n", "k")}
        columns["warmup_calls"] = d["warmup_calls"].fillna(0).to_numpy(float) if "warmup_calls" in d else 0.0
        columns["timed_calls"] = d["timed_calls"].fillna(1).to_numpy(float) if "timed_calls" in d else 1.0
        return columns
    if name == "allreduce":
        return {c: d[c].to_numpy(float) for c in ("m", "n", "bytes_per_element")}
    if name == "elementwise":
        columns = {c: d[c].to_numpy(float) for c in ("m", "k", "bytes_per_element")}
        columns.update(m_int=d["m"].to_numpy(np.int64), k_int=d["k"].to_numpy(np.int64))
        return columns
    extra = ("kv_len",) if name in ("decode_attention", "decode_attention_fp8_kv") else ("seq_len",)
    return {c: d[c].to_numpy(float) for c in ("batch_size", "num_heads", "num_kv_heads", "head_dim") + extra}


def _evaluate(name: str, d, gpu, profile, l2_resident: bool) -> tuple:
    """(HBM bytes, time s) of rows of one op."""
    d = op_columns(name, d)
    if name == "gemm":
        out = kernels.gemm(gpu, profile, d["m"], d["n"], d["k"], DTYPE_BYTES, l2_resident,
                           warmup_calls=d["warmup_calls"], timed_calls=d["timed_calls"])
        return out[1], out[4]
    if name == "fp8_gemm":
        out = kernels.fp8_linear(gpu, profile.fp8_variant(), d["m"], d["n"], d["k"], DTYPE_BYTES, l2_resident,
                                 warmup_calls=d["warmup_calls"], timed_calls=d["timed_calls"])
        return out[1], out[4]
    if name == "allreduce":
        message = d["m"] * d["bytes_per_element"]
        return np.zeros(len(message)), kernels.allreduce(gpu, profile, message, d["n"])[1]
    if name == "elementwise":
        hbm = d["m"] * d["k"] * d["bytes_per_element"]
        return hbm, kernels.elementwise(gpu, profile, hbm, 1, l2_resident, d["m_int"], d["k_int"])[1]
    b = d["batch_size"]
    heads, kv_heads, head_dim = d["num_heads"], d["num_kv_heads"], d["head_dim"]
    if name in ("decode_attention", "decode_attention_fp8_kv"):
        kv = d["kv_len"]
        pairs = b * kv  # one query per sequence over all its keys
        fp8 = name == "decode_attention_fp8_kv"
        out = kernels.decode_attention(gpu, profile.fp8_kv_variant() if fp8 else profile, b, 1, b * kv, pairs, heads,
                                       kv_heads, head_dim, kernels.FP8_BYTES if fp8 else DTYPE_BYTES, l2_resident)
        return out[1], out[4]
    s = d["seq_len"]
    fp8 = name == "prefill_attention_fp8_kv"
    p = profile.fp8_kv_prefill_variant() if fp8 else profile
    out = kernels.prefill_attention(gpu, p, b, b * s, b * kernels.causal_pairs(p, s), heads, kv_heads,
                                    head_dim, kernels.FP8_BYTES if fp8 else DTYPE_BYTES, l2_resident=l2_resident)
    return out[1], out[4]


def error_report(measured: np.ndarray, predicted: np.ndarray) -> dict:
    """Fit statistics of predicted against measured times: rows, median, p90 and max
    of |error| and the signed median, in percent of measured."""
    err = (predicted / measured - 1.0) * 100.0
    a = np.abs(err)
    return {"rows": int(len(err)), "median_abs_pct": float(np.median(a)), "p90_abs_pct": float(np.percentile(a, 90)),
            "max_abs_pct": float(a.max()), "signed_median_pct": float(np.median(err))}
