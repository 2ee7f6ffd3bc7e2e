"""Bundled profiles on attention shapes their fit never saw: other head sizes and group
sizes (run on demand; needs the calibrate extra, aiconfigurator-core).

    python tools/head_size_check.py [--gpu h100-sxm] [--frameworks vllm,trtllm] [--out FILE.csv]

The bundled calibration subset (servesim/data/calibration/) has attention rows of
head_dim 128 at the catalog's Llama layouts and of 64 and 256 at its other models'
(Llama-3.2-1B, TinyLlama, the LLaMA-68M drafts; Gemma-2-9B); aiconfigurator-core's whole
database also times head sizes of 192 and 512, other layouts, and up to 128 query heads a
KV head. This scores each bundled profile of the GPU, as it is (no refit), on every
attention row of that database and prints the signed median and median |error| (%) by
head size and by group size (query heads a KV head): how far the profiles carry to
attention the fit has not seen (head_dim 192 and 512 are out of sample).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from servesim.hardware import get_gpu
from servesim.hardware.aiconfigurator import read_database
from servesim.hardware.calibrate import calibration_rows
from servesim.hardware.kernel_table import predict_op

OPS = ("decode_attention", "prefill_attention")


def head_size_errors(gpu_name: str, framework: str) -> pd.DataFrame:
    """Rows (framework, op, by, value, rows, signed median %, median |error| %) of the GPU's
    bundled profile for ``framework`` on the installed database's attention rows, grouped
    by head size and by group size."""
    gpu = get_gpu(gpu_name, framework)  # with its bundled profile for the framework
    rows, _ = calibration_rows(read_database(gpu.measured_as, framework), gpu, framework, gpu.measured_as)
    out = []
    for op in OPS:
        r = rows[rows["op"] == op]
        err = 100.0 * (predict_op(op, r, gpu, gpu.profile) / r["latency_s"].to_numpy(float) - 1.0)
        keys = {"head_dim": r["head_dim"].to_numpy(int),
                "group": (r["num_heads"] // r["num_kv_heads"]).to_numpy(int)}
        for by, values in keys.items():
            for value in np.unique(values):
                e = err[values == value]
                out.append({"framework": framework, "op": op, "by": by, "value": int(value), "rows": len(e),
                            "signed_median_pct": float(np.median(e)),
                            "median_abs_pct": float(np.median(np.abs(e)))})
    return pd.DataFrame(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", default="h100-sxm")
    parser.add_argument("--frameworks", default="vllm,sglang,trtllm")
    parser.add_argument("--out")
    args = parser.parse_args()
    table = pd.concat([head_size_errors(args.gpu, f) for f in args.frameworks.split(",")], ignore_index=True)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(table.round(1).to_string(index=False))
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
