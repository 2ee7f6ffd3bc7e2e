"""Profiles carried to another GPU by its datasheet, against that GPU's measured kernels
(run on demand; a leave-one-GPU-out check).

    python tools/transfer_check.py [--out servesim/data/checks/profile_transfer.csv]

A100 PCIe and H100 PCIe have no measured tables: their profiles are their SXM
siblings' (the same chip and kernels) with their own datasheet peaks, and A10G's is
L40S's. This measures how good that derivation is where it can be measured: each pair
below predicts the target GPU's measured rows (the rows its own calibration uses) with
the source GPU's profile on the target's datasheet (HBM bandwidth, FLOP/s, L2, SMs).

- H100 SXM <-> H200: the same GH100 chip with different memory (3.35 vs 4.8 TB/s),
  which is the PCIe derivations' case (same chip, other peaks);
- H200 -> B200 and A100 SXM -> H100 SXM: the next generation, for scale (how far an
  estimate from another chip, as A10G's, can be off).

The target's own fit (in-sample median) is printed beside each, for reference.
"""

from __future__ import annotations

import argparse
from importlib.resources import files

import pandas as pd

from servesim.hardware import get_gpu, get_profile
from servesim.hardware.calibrate import calibration_rows, report
from servesim.hardware.kernel_table import read_kernel_table

PAIRS = (("h100-sxm", "h200"), ("h200", "h100-sxm"), ("h200", "b200"), ("a100-80gb-sxm", "h100-sxm"))
"""(source GPU, target GPU) of the catalog."""
PROFILE_STEM = {"a100-80gb-sxm": "a100-sxm", "h100-sxm": "h100-sxm", "h200": "h200", "b200": "b200"}
FRAMEWORKS = ("vllm", "sglang", "trtllm")
OPS = ("gemm", "decode_attention", "prefill_attention", "elementwise")


def transfer(table: pd.DataFrame, source: str, target: str, framework: str) -> list[dict]:
    """Per op class: the source GPU's profile on the target's datasheet, scored on the
    target's measured rows; with the target's own profile's in-sample median."""
    target_gpu = get_gpu(target)
    rows, _ = calibration_rows(table, target_gpu, framework, target_gpu.measured_as)
    profile, _ = get_profile(f"{PROFILE_STEM[source]}-{framework}")
    own, own_table = get_profile(f"{PROFILE_STEM[target]}-{framework}")
    scores = report(rows, target_gpu, profile)
    out = []
    for op in OPS:
        if op not in scores:
            continue
        own_fit = own_table["fit"]["in_sample"].get(op)
        s = scores[op]
        out.append({"framework": framework, "source_gpu": source, "target_gpu": target, "op": op,
                    "rows": s["rows"], "median_abs_pct": s["median_abs_pct"], "p90_abs_pct": s["p90_abs_pct"],
                    "signed_median_pct": s["signed_median_pct"],
                    "target_own_median_abs_pct": own_fit["median_abs_pct"] if own_fit else float("nan")})
    return out


def check(pairs=PAIRS, frameworks=FRAMEWORKS) -> pd.DataFrame:
    table = read_kernel_table(files("servesim") / "data/calibration/kernels_measured.csv.gz")
    return pd.DataFrame([row for source, target in pairs for framework in frameworks
                         for row in transfer(table, source, target, framework)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args()
    out = check()
    pd.set_option("display.width", 200)
    print(out.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if args.out:
        out.to_csv(args.out, index=False, float_format="%.4g")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
