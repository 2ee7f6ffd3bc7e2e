"""Build servesim's bundled calibration table (run on demand; the output is committed).

    pip install aiconfigurator-core==0.12.0   # NVIDIA, Apache-2.0: the measured database
    python tools/extract_calibration.py [--reference DIR]

Writes ``servesim/data/calibration/kernels_measured.csv.gz`` in servesim's kernel-table
format (see ``servesim/hardware/kernel_table.py``): bf16 GEMMs of Llama-7B/8B layer
shapes (and from the package their FP8 ones, W8A8 with per-tensor scales, ``fp8_gemm``,
at these and the split shapes below, where the GPU has FP8 tensor cores, and decode
attention over an FP8 KV cache at the grouped-query layouts below and prefill attention
writing one), decode and prefill attention (32 query heads x 128), from the extract in
``../shared/reference/kernels/`` (``--reference``); from the aiconfigurator-core
package, the bf16 GEMMs of the same layers split for tensor parallelism (see
:data:`SHARD_GEMMS`: the extract has each layer's whole GEMMs only, and a TP 8 shard of
Llama-3-8B's qkv, 768 x 4096, is a GEMM of a few tiles no whole layer has) and decode
and prefill attention at the head counts those layers' shards run (:data:`SHARD_HEADS`,
on the extract's grid of batch sizes and lengths: a TP 8 GPU of Llama-3-8B runs 4 query
heads over 1 KV head, whose per-sequence work differs from 32 over 8),
memory-bound elementwise kernels (``scale_matrix``: bf16 in, fp8 out, 3 bytes per
element) for k in
{512, 4096, 12288, 51200} from the aiconfigurator-core package, for the GPUs servesim
calibrates (A100 SXM, H100 SXM, H200 SXM, L40S, B200) and its three frameworks; and the
frameworks' custom all-reduce (bf16, CUDA-graph mode where measured, the newest version
per framework: ``m`` elements over ``n`` GPUs).
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

import pandas as pd
from packaging.version import Version

from servesim.hardware.aiconfigurator import (allreduce_rows, database_l2_bytes, fp8_kv_decode_rows,
                                              fp8_kv_prefill_rows, gemm_benchmark_calls)
from servesim.hardware.kernel_table import COLUMNS, FRAMEWORK_NAMES, write_kernel_table

GPUS = ("a100_sxm", "h100_sxm", "h200_sxm", "l40s", "b200_sxm")
SHARD_SIZES = (512, 768, 1024, 1536, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240, 12288, 16384)
"""The database's GEMM grid sizes from 512 to 16,384: the widths of a layer's GEMMs
split over 1-8 GPUs (qkv and the fused gate/up shard their output N, o_proj and
down_proj their reduction K)."""
HIDDEN_SIZES = (4096, 5120, 8192)
"""Model widths in the catalog that the database's grid has (7B/8B, 13B, 70B)."""
SHARD_GEMMS = sorted({(n, h) for h in HIDDEN_SIZES for n in SHARD_SIZES}
                     | {(h, k) for h in HIDDEN_SIZES for k in SHARD_SIZES})
"""(n, k) of the tensor-parallel GEMMs taken from the package: a column-parallel GEMM
reads the hidden state (k = hidden), a row-parallel one writes it (n = hidden)."""
SHARD_HEADS = ((16, 4), (8, 2), (4, 1), (16, 16), (8, 8), (4, 4), (32, 4), (16, 2), (8, 1))
"""(query heads, KV heads) a GPU runs of the catalog's head layouts split over 2, 4 and 8
GPUs (tensor parallelism shards attention by head): Llama-3-8B's 32 / 8, Llama-2-7B's
32 / 32 and Llama-3-70B's 64 / 8; the extract has 32 query heads only."""
OTHER_HEAD_SIZES = {64: ((32, 8), (16, 4), (8, 2), (4, 1), (32, 4), (16, 2), (8, 1), (12, 12)),
                    256: ((16, 8), (8, 4), (4, 2), (2, 1))}
"""(query heads, KV heads) by head size other than 128, where the database has them: the
catalog's head_dim 64 models (Llama-3.2-1B's 32 / 8, TinyLlama's 32 / 4, the LLaMA-68M and
160M drafts' 12 / 12) and head_dim 256 (Gemma-2-9B's 16 / 8), whole and split over 2, 4
and 8 GPUs; they tell the attention's per-pair softmax from its FLOPs, which grow with the
head size (``attention_softmax_pair_s``)."""
SHARD_TOKENS = (1, 2, 4, 8, 16, 32, 33, 48, 64, 65, 96, 128, 129, 192, 256, 257, 384, 512, 513, 768, 1024,
                1025, 1536, 2048, 2049, 3072, 4096, 4097, 8192, 16384)
"""Token counts (m) of those GEMMs (the database's, where it has them): powers of two
and the tile boundaries just past them."""


def shard_attention(data, gpu: str, framework: str, decode: pd.DataFrame, prefill: pd.DataFrame) -> list:
    """Decode and prefill attention rows of ``gpu`` and ``framework`` at the
    :data:`SHARD_HEADS` layouts, from the database's newest version (the one the
    extract's whole-layer rows come from), at the (batch size, length) pairs the extract
    has for that GPU and framework: bf16 attention and KV, head size 128, no sliding
    window, beam 1; and at the :data:`OTHER_HEAD_SIZES` layouts the database has."""
    frames = []
    for kind, whole, length in (("generation", decode, "step"), ("context", prefill, "isl")):
        paths = sorted(Path(str(data / gpu / "attention" / framework)).glob(f"*/{kind}_attention_perf.parquet"),
                       key=lambda p: Version(p.parts[-2]))
        if not paths:
            continue
        path = paths[-1]
        e = pd.read_parquet(path)
        mine = whole[(whole.gpu == gpu) & (whole.framework.str.lower() == framework)
                     & (whole.version.astype(str) == path.parts[-2])]
        grid = set(zip(mine.batch_size, mine[length]))
        window = e["window_size"].fillna(0) if "window_size" in e else 0
        layouts = {(h, kv, 128) for h, kv in SHARD_HEADS} | {
            (h, kv, d) for d, pairs in OTHER_HEAD_SIZES.items() for h, kv in pairs}
        heads = pd.Series(list(zip(e.num_heads, e.num_key_value_heads, e.head_dim)), index=e.index)
        shape = pd.Series(list(zip(e.batch_size, e[length])), index=e.index)
        keep = ((e.attn_dtype == "bfloat16") & (e.kv_cache_dtype == "bfloat16") & (window == 0)
                & (e.beam_width == 1) & heads.isin(layouts) & shape.isin(grid))
        keep &= (e.isl == 1) if kind == "generation" else (e.step == 0)
        keys = ["framework", "version", "batch_size", "isl", "step", "num_heads", "num_key_value_heads", "head_dim"]
        e = e[keep].groupby(keys, as_index=False)["latency"].median()  # one row a shape
        columns = {"gpu": gpu, "framework": e.framework, "version": e.version, "batch_size": e.batch_size,
                   "num_heads": e.num_heads, "num_kv_heads": e.num_key_value_heads, "head_dim": e.head_dim,
                   "latency_s": e.latency * 1e-3, "source": str(path.relative_to(Path(str(data)).parents[1]))}
        if kind == "generation":
            # `step` tokens are cached; the new token's K/V is appended and read too
            frames.append(pd.DataFrame({**columns, "op": "decode_attention", "kv_len": e.step + 1}))
        else:
            frames.append(pd.DataFrame({**columns, "op": "prefill_attention", "seq_len": e.isl}))
    return (frames + fp8_kv_attention(data, gpu, framework, "generation", decode)
            + fp8_kv_attention(data, gpu, framework, "context", prefill))


FP8_KV = {"generation": ("step", fp8_kv_decode_rows, {(h, kv) for h, kv in SHARD_HEADS + ((32, 8),) if kv < h}),
          "context": ("isl", fp8_kv_prefill_rows, set(SHARD_HEADS) | {(32, 8), (32, 32)})}
"""Attention over an FP8 KV cache, by table: (its length column, the rows calibrated on,
the (query heads, KV heads) layouts of 128-wide heads taken). Decode: the grouped-query
layouts the 16-bit rows have (a whole layer's 32 / 8 and its shards); prefill: those and
the multi-head ones (32 / 32 and its shards), bf16 attention where measured, else FP8."""


def fp8_kv_attention(data, gpu: str, framework: str, kind: str, whole: pd.DataFrame) -> list:
    """Decode (``kind`` ``generation``) or prefill (``context``) attention over an FP8 KV
    cache of ``gpu`` and ``framework``, newest version, at the :data:`FP8_KV` layouts, on the
    extract's (batch size, length) grid of ``whole`` (its 16-bit rows of that table)."""
    paths = sorted(Path(str(data / gpu / "attention" / framework)).glob(f"*/{kind}_attention_perf.parquet"),
                   key=lambda p: Version(p.parts[-2]))
    if not paths:
        return []
    path = paths[-1]
    length, calibrated, layouts = FP8_KV[kind]
    e = pd.read_parquet(path)
    mine = whole[(whole.gpu == gpu) & (whole.framework.str.lower() == framework)
                 & (whole.version.astype(str) == path.parts[-2])]
    grid = set(zip(mine.batch_size, mine[length]))
    shape = pd.Series(list(zip(e.batch_size, e[length])), index=e.index)
    heads = pd.Series(list(zip(e.num_heads, e.num_key_value_heads)), index=e.index)
    e = e[calibrated(e) & shape.isin(grid) & heads.isin(layouts)]
    keys = ["framework", "version", "batch_size", length, "num_heads", "num_key_value_heads", "head_dim"]
    e = e.groupby(keys, as_index=False)["latency"].median()  # one row a shape
    columns = ({"op": "decode_attention_fp8_kv", "kv_len": e.step + 1} if kind == "generation"  # (+ the new token)
               else {"op": "prefill_attention_fp8_kv", "seq_len": e.isl})
    return [pd.DataFrame({"gpu": gpu, "framework": e.framework, "version": e.version, **columns,
                          "batch_size": e.batch_size, "num_heads": e.num_heads,
                          "num_kv_heads": e.num_key_value_heads, "head_dim": e.head_dim,
                          "latency_s": e.latency * 1e-3,
                          "source": str(path.relative_to(Path(str(data)).parents[1]))})]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", default=str(Path(__file__).resolve().parents[2] / "shared/reference/kernels"))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1]
                                             / "servesim/data/calibration/kernels_measured.csv.gz"))
    args = parser.parse_args()
    ref = Path(args.reference)
    frames = []
    g = pd.read_csv(ref / "gemm_llama_shapes_measured.csv")
    frames.append(pd.DataFrame({"gpu": g.gpu, "framework": g.framework, "version": g.version, "op": "gemm",
                                "m": g.m, "n": g.n, "k": g.k, "latency_s": g.latency_ms * 1e-3,
                                "source": g.file_in_package}))
    a = pd.read_csv(ref / "generation_attention_32h_128d_measured.csv")
    frames.append(pd.DataFrame({"gpu": a.gpu, "framework": a.framework, "version": a.version,
                                "op": "decode_attention", "batch_size": a.batch_size,
                                # `step` tokens are cached; the new token's K/V is appended and read too
                                "kv_len": a.step + 1, "num_heads": a.num_heads,
                                "num_kv_heads": a.num_key_value_heads, "head_dim": a.head_dim,
                                "latency_s": a.latency_ms * 1e-3, "source": a.file_in_package}))
    c = pd.read_csv(ref / "context_attention_32h_128d_measured.csv")
    frames.append(pd.DataFrame({"gpu": c.gpu, "framework": c.framework, "version": c.version,
                                "op": "prefill_attention", "batch_size": c.batch_size, "seq_len": c.isl,
                                "num_heads": c.num_heads, "num_kv_heads": c.num_key_value_heads,
                                "head_dim": c.head_dim, "latency_s": c.latency_ms * 1e-3,
                                "source": c.file_in_package}))
    data = resources.files("aiconfigurator_core").joinpath("systems", "data")
    whole = set(zip(g.n, g.k))
    for gpu in GPUS:
        by_framework = {}
        for path in sorted(Path(str(data / gpu / "gemm")).glob("*/*/gemm_perf.parquet")):
            by_framework.setdefault(path.parts[-3], []).append(path)
        for framework, paths in by_framework.items():
            path = max(paths, key=lambda p: Version(p.parts[-2]))  # the newest version measured
            e = pd.read_parquet(path)
            shapes = pd.Series(list(zip(e.n, e.k)), index=e.index)
            bf16 = (e.gemm_dtype == "bfloat16") & shapes.isin(set(SHARD_GEMMS) - whole)
            fp8 = (e.gemm_dtype == "fp8") & shapes.isin(set(SHARD_GEMMS) | whole)
            e = e[(bf16 | fp8) & e.m.isin(SHARD_TOKENS)]
            frames.append(pd.DataFrame({"gpu": gpu, "framework": e.framework, "version": e.version,
                                        "op": e.gemm_dtype.map({"bfloat16": "gemm", "fp8": "fp8_gemm"}),
                                        "m": e.m, "n": e.n, "k": e.k, "latency_s": e.latency * 1e-3,
                                        "source": str(path.relative_to(Path(str(data)).parents[1]))}))
    for gpu in GPUS:
        for framework in ("vllm", "sglang", "trtllm"):
            frames.extend(shard_attention(data, gpu, framework, a, c))
    for gpu in GPUS:
        for path in sorted(Path(str(data / gpu / "quantize")).glob("*/*/scale_matrix_perf.parquet")):
            e = pd.read_parquet(path)
            e = e[e.k.isin([512, 4096, 12288, 51200])]
            frames.append(pd.DataFrame({"gpu": gpu, "framework": e.framework, "version": e.version,
                                        "op": "elementwise", "m": e.m, "k": e.k, "bytes_per_element": 3,
                                        "latency_s": e.latency * 1e-3,
                                        "source": str(path.relative_to(Path(str(data)).parents[1]))}))
    for gpu in GPUS:
        by_framework: dict[str, list[Path]] = {}
        for path in sorted(Path(str(data / gpu / "comm")).glob("*/*/custom_allreduce_perf.parquet")):
            by_framework.setdefault(path.parts[-3], []).append(path)
        for framework, paths in by_framework.items():
            path = max(paths, key=lambda p: Version(p.parts[-2]))  # the newest version measured
            e = allreduce_rows(pd.read_parquet(path))
            frames.append(pd.DataFrame({"gpu": gpu, "framework": e.framework, "version": e.version,
                                        "op": "allreduce", "m": e.message_size, "n": e.num_gpus,
                                        "bytes_per_element": 2, "latency_s": e.latency * 1e-3,
                                        "source": str(path.relative_to(Path(str(data)).parents[1]))}))
    table = pd.concat(frames, ignore_index=True)
    table = table[table.gpu.isin(GPUS)].reindex(columns=list(COLUMNS))
    for gpu in GPUS:  # how long each GEMM measurement kept the GPU at full load
        for op, weight_bytes in (("gemm", 2), ("fp8_gemm", 1)):
            rows = (table.gpu == gpu) & (table.op == op)
            framework = table.loc[rows, "framework"].replace(FRAMEWORK_NAMES).str.lower().to_numpy()
            table.loc[rows, "warmup_calls"], table.loc[rows, "timed_calls"] = gemm_benchmark_calls(
                framework, table.loc[rows, "n"].to_numpy(), table.loc[rows, "k"].to_numpy(), database_l2_bytes(gpu),
                weight_bytes)
    write_kernel_table(table, args.out)
    print(f"wrote {args.out}: {len(table)} rows")
    print(table.groupby(["gpu", "framework", "op"]).size().to_string())


if __name__ == "__main__":
    main()
