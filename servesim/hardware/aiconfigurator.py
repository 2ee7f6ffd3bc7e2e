"""Read the measured kernel database of ``aiconfigurator-core`` (the ``calibrate`` extra).

NVIDIA's ``aiconfigurator-core`` (Apache-2.0; servesim matched 0.12.0) ships measured
per-kernel latencies under ``aiconfigurator_core/systems/data/<gpu>/<op family>/
<framework>/<version>/*.parquet``, milliseconds per call of one layer. This module turns
the tables servesim calibrates on into its kernel-table format
(:mod:`servesim.hardware.kernel_table`): bf16 GEMMs, FP8 ones (``fp8``: W8A8 with
per-tensor scales, the activations' quantization in the time), bf16 decode attention
over an FP8 KV cache (grouped-query, 128-wide heads) and prefill attention writing one
(128-wide heads), bf16 decode (generation) and
prefill (context) attention with bf16 KV, no sliding window, beam 1, the
``scale_matrix`` quantize kernel (bf16 in, fp8 out: a memory-bound elementwise kernel
of 3 bytes per element) and the framework's own all-reduce (bf16, CUDA-graph replay
where measured so: ``m`` elements over ``n`` GPUs). A newer release with new GPUs is
read the same way.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from servesim.hardware.kernel_table import COLUMNS, check_kernel_table


GEMM_WEIGHT_COPIES = {"vllm": 6, "sglang": 6}
"""Weight copies (distinct GEMMs of the shape) that aiconfigurator's GEMM collectors run
per benchmarked call (``collector/<framework>/collect_gemm.py``; vLLM a fixed 6;
SGLang up to 6 as memory allows, 6 for every bf16 shape of the database but its largest
few; TRT-LLM as many as fill the L2, 1 to 5: :func:`gemm_benchmark_calls`)."""
TIMED_CALLS = 6
WARMUP_CALLS = 6
"""``collector/helper.py``'s ``benchmark_with_power``: 3 eager warm-up calls, 3 CUDA-graph
warm-up replays, then 6 timed replays, each call running every weight copy once."""


def gemm_benchmark_calls(framework, n, k, l2_cache_bytes: float, dtype_bytes: int = 2):
    """(GEMM calls before the timed window, GEMM calls in it) of aiconfigurator's
    collector for GEMMs of ``n x k`` weights (numpy arrays or numbers) under
    ``framework``: the kernel table's ``warmup_calls`` and ``timed_calls``, which tell
    the calibration how long each measurement kept the GPU at full GEMM load."""
    import numpy as np

    weight_bytes = np.asarray(n, dtype=float) * np.asarray(k, dtype=float) * dtype_bytes
    trtllm = np.clip(np.ceil(l2_cache_bytes / weight_bytes), 1, 5)
    copies = np.where(np.asarray(framework) == "trtllm", trtllm,
                      np.vectorize(lambda f: GEMM_WEIGHT_COPIES.get(f, 1), otypes=[float])(framework))
    return WARMUP_CALLS * copies, TIMED_CALLS * copies


def database_l2_bytes(gpu: str) -> float:
    """L2 cache bytes of the catalog GPU whose measurements are the database's ``gpu``
    folder (0 if the catalog has none)."""
    from servesim.hardware import get_gpu, gpu_names

    for name in gpu_names():
        entry = get_gpu(name)
        if entry.measured_as == gpu:
            return float(entry.l2_cache_bytes)
    return 0.0


def database_root() -> Path:
    """The installed package's ``systems/data`` folder."""
    try:
        from importlib import resources
        root = resources.files("aiconfigurator_core").joinpath("systems", "data")
    except ModuleNotFoundError:
        raise FileNotFoundError("aiconfigurator-core is not installed: pip install 'servesim[calibrate]'") from None
    return Path(str(root))


def _frames(root: Path, gpu: str, family: str, name: str, framework: str):
    for path in sorted((root / gpu / family).glob(f"{framework}/*/{name}")):
        yield path, pd.read_parquet(path)


def _full_attention(frame: pd.DataFrame, kv_cache_dtype: str = "bfloat16", attn_dtype: str = "bfloat16") -> pd.Series:
    """Rows of an attention table that servesim calibrates on: bf16 attention and KV (or
    ``attn_dtype``, ``kv_cache_dtype``), beam 1, no sliding window (tables without a
    ``window_size`` column, A100's vLLM and SGLang ones, measured full attention only)."""
    window = frame["window_size"].fillna(0) if "window_size" in frame else 0
    return ((frame["attn_dtype"] == attn_dtype) & (frame["kv_cache_dtype"] == kv_cache_dtype)
            & (window == 0) & (frame["beam_width"] == 1))


def fp8_kv_prefill_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows of a context-attention table that FP8-KV prefill attention is calibrated on:
    an FP8 KV cache, no cached prefix, 128-wide heads, with bf16 attention where the
    table has it and else FP8 attention (SGLang's H100 and H200 tables have only that)."""
    prompts = (frame["step"] == 0) & (frame["head_dim"] == 128)
    bf16 = prompts & _full_attention(frame, "fp8")
    return bf16 if bf16.any() else prompts & _full_attention(frame, "fp8", "fp8")


def fp8_kv_decode_rows(frame: pd.DataFrame) -> pd.Series:
    """Rows of a generation-attention table that FP8-KV decode attention is calibrated
    on: bf16 queries over an FP8 KV cache, grouped-query layouts of 128-wide heads (the
    variant's fields are those; multi-head and other head sizes keep the 16-bit fit's)."""
    return (_full_attention(frame, "fp8") & (frame["isl"] == 1) & (frame["head_dim"] == 128)
            & (frame["num_key_value_heads"] < frame["num_heads"]))


def allreduce_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of a ``custom_allreduce_perf`` table servesim calibrates on: bf16, and
    where the table has CUDA-graph replays, those only (servers replay their steps as
    graphs)."""
    frame = frame[frame["allreduce_dtype"] == "bfloat16"]
    if "kernel_source" in frame and frame["kernel_source"].str.contains("graph").any():
        frame = frame[frame["kernel_source"].str.contains("graph")]
    return frame


def read_database(gpu: str, framework: str, root: Path | None = None) -> pd.DataFrame:
    """The kernel table of ``gpu`` (a database folder name, e.g. ``h100_sxm``) and
    ``framework`` (``vllm``, ``sglang``, ``trtllm``)."""
    root = root or database_root()
    if not (root / gpu).is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(f"{root}: no GPU folder {gpu!r}; the database has {', '.join(have)}")
    out = []

    def add(frame: pd.DataFrame, path: Path, **columns) -> None:
        columns.setdefault("source", str(path.relative_to(root.parents[1])))
        out.append(pd.DataFrame({"gpu": gpu, "framework": framework,
                                 "version": frame["version"].astype(str), **columns}))

    for path, frame in _frames(root, gpu, "gemm", "gemm_perf.parquet", framework):
        for dtype, op, weight_bytes in (("bfloat16", "gemm", 2), ("fp8", "fp8_gemm", 1)):
            g = frame[frame["gemm_dtype"] == dtype]
            warmup, timed = gemm_benchmark_calls(framework, g["n"].to_numpy(), g["k"].to_numpy(),
                                                 database_l2_bytes(gpu), weight_bytes)
            add(g, path, op=op, m=g["m"], n=g["n"], k=g["k"], latency_s=g["latency"] * 1e-3,
                warmup_calls=warmup, timed_calls=timed)
    for path, a in _frames(root, gpu, "attention", "generation_attention_perf.parquet", framework):
        a = a[_full_attention(a) & (a["isl"] == 1)]
        add(a, path, op="decode_attention", batch_size=a["batch_size"], kv_len=a["step"] + 1,
            num_heads=a["num_heads"], num_kv_heads=a["num_key_value_heads"], head_dim=a["head_dim"],
            latency_s=a["latency"] * 1e-3)
    for path, a in _frames(root, gpu, "attention", "generation_attention_perf.parquet", framework):
        a = a[fp8_kv_decode_rows(a)]
        add(a, path, op="decode_attention_fp8_kv", batch_size=a["batch_size"], kv_len=a["step"] + 1,
            num_heads=a["num_heads"], num_kv_heads=a["num_key_value_heads"], head_dim=a["head_dim"],
            latency_s=a["latency"] * 1e-3)
    for path, c in _frames(root, gpu, "attention", "context_attention_perf.parquet", framework):
        c = c[_full_attention(c) & (c["step"] == 0)]
        add(c, path, op="prefill_attention", batch_size=c["batch_size"], seq_len=c["isl"],
            num_heads=c["num_heads"], num_kv_heads=c["num_key_value_heads"], head_dim=c["head_dim"],
            latency_s=c["latency"] * 1e-3)
    for path, c in _frames(root, gpu, "attention", "context_attention_perf.parquet", framework):
        c = c[fp8_kv_prefill_rows(c)]
        add(c, path, op="prefill_attention_fp8_kv", batch_size=c["batch_size"], seq_len=c["isl"],
            num_heads=c["num_heads"], num_kv_heads=c["num_key_value_heads"], head_dim=c["head_dim"],
            latency_s=c["latency"] * 1e-3)
    for path, e in _frames(root, gpu, "quantize", "scale_matrix_perf.parquet", framework):
        add(e, path, op="elementwise", m=e["m"], k=e["k"], bytes_per_element=3, latency_s=e["latency"] * 1e-3)
    for path, e in _frames(root, gpu, "comm", "custom_allreduce_perf.parquet", framework):
        e = allreduce_rows(e)
        add(e, path, op="allreduce", m=e["message_size"], n=e["num_gpus"], bytes_per_element=2,
            latency_s=e["latency"] * 1e-3)
    if not out:
        raise FileNotFoundError(f"{root / gpu}: no {framework} GEMM, attention or quantize tables")
    table = pd.concat(out, ignore_index=True).reindex(columns=list(COLUMNS))
    return check_kernel_table(table, f"aiconfigurator-core {gpu}/{framework}")
