"""Attention at head counts the fit never saw (run on demand; a leave-layouts-out check).

    python tools/head_holdout.py [--profiles h100-sxm-vllm,a100-sxm-vllm] [--head-dim 256] [--out FILE.csv]

The bundled table has decode and prefill attention at a whole layer's heads and at the
heads one GPU of a tensor-parallel group runs (tools/extract_calibration.py). A model
outside the catalog splits into other layouts (Qwen2.5-7B's 28 / 4 heads are 7 / 1 at
TP 4). This fits each bundled profile's GPU and framework again with the TP 8 layouts
(4 / 1, 4 / 4, 8 / 1: the fewest heads) left out of the attention rows, and scores the
fit on them: how far the per-pair, per-head and per-sequence mechanisms carry to head
counts they were not fitted on. The profile's own fit on the held-out rows (in-sample)
is printed beside it.

With ``--head-dim D`` the attention rows of head size D are left out instead (the bundled
table has head sizes 64, 128 and 256 on H100, H200, B200 and L40S): how far the softmax
a pair and decode's fixed time an element of a head, fitted on the other two sizes,
carry to a third.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from fit_table import calibration_of
from servesim.hardware import get_profile, profile_names
from servesim.hardware.calibrate import fit_profile
from servesim.hardware.kernel_table import error_report, predict_op

HELD_OUT = {(4, 1), (4, 4), (8, 1)}
"""(query heads, KV heads) held out: a TP 8 GPU's share of Llama-3-8B, Llama-2-7B and
Llama-3-70B."""
OPS = ("decode_attention", "prefill_attention")


def held_out(rows: pd.DataFrame, head_dim: int | None = None) -> np.ndarray:
    """Attention rows at the :data:`HELD_OUT` layouts, or of head size ``head_dim``."""
    attention = rows["op"].isin(OPS).to_numpy()
    if head_dim:
        return attention & (rows["head_dim"] == head_dim).to_numpy()
    layout = [(int(h), int(kv)) in HELD_OUT
              for h, kv in zip(rows["num_heads"].fillna(0), rows["num_kv_heads"].fillna(0))]
    return attention & np.array(layout, dtype=bool)


def check(name: str, head_dim: int | None = None) -> list[dict]:
    profile, gpu, rows = calibration_of(name)
    held = held_out(rows, head_dim)
    if not held.any():
        return []
    split, _ = fit_profile(rows[~held].reset_index(drop=True), gpu)
    out = []
    for op in OPS:
        part = rows[held & (rows["op"] == op).to_numpy()]
        measured = part["latency_s"].to_numpy(float)
        stats = error_report(measured, predict_op(op, part, gpu, split))
        own = error_report(measured, predict_op(op, part, gpu, profile))
        out.append({"profile": name, "op": op, "rows": stats["rows"], "median_abs_pct": stats["median_abs_pct"],
                    "p90_abs_pct": stats["p90_abs_pct"], "signed_median_pct": stats["signed_median_pct"],
                    "in_sample_median_abs_pct": own["median_abs_pct"]})
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profiles", help="comma-separated bundled profiles (default: every calibrated one)")
    parser.add_argument("--head-dim", type=int, help="leave this head size out instead of the TP 8 layouts")
    parser.add_argument("--out")
    args = parser.parse_args()
    names = args.profiles.split(",") if args.profiles else [
        n for n in profile_names() if "in_sample" in get_profile(n)[1].get("fit", {})]
    frame = pd.DataFrame([r for name in names for r in check(name, args.head_dim)])
    print(frame.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if args.out:
        frame.to_csv(args.out, index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
