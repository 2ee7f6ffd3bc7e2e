"""How repeatable the measured GEMM tables are, beside how well the profiles fit them
(run on demand): a noise floor for the calibration targets, read from the data alone.

Two readings per GPU and framework, neither using the cost model:

* doubling: for GEMMs of at least 1,024 tokens (compute-bound at a plateau, so twice
  the tokens should take about twice the time), ``t(2m) / (2 t(m))`` over every shape
  measured at both; the median of its |deviation| from its own median. Wave
  quantization moves it legitimately by a few percent; more is the table's own scatter.
* across frameworks: the median |ratio - 1| of two frameworks' times for the same
  (m, n, k). vLLM's and SGLang's bf16 GEMMs are both PyTorch's cuBLAS calls, so their
  disagreement is mostly run-to-run variation (two noisy tables disagree by about
  sqrt(2) x one table's scatter); TRT-LLM's are its own kernels.

Next to them, the bundled profile's GEMM fit (median |error|), from its report.

    python tools/table_roughness.py
"""

from __future__ import annotations

from importlib.resources import files

import numpy as np
import pandas as pd

from servesim.hardware import get_profile
from servesim.hardware.calibrate import select_version
from servesim.hardware.kernel_table import read_kernel_table

PROFILES = {"a100_sxm": "a100-sxm", "h100_sxm": "h100-sxm", "h200_sxm": "h200", "b200_sxm": "b200", "l40s": "l40s"}
FRAMEWORKS = ("vllm", "sglang", "trtllm")


def gemm_times(table: pd.DataFrame, gpu: str, framework: str) -> pd.Series:
    """Median measured time per (m, n, k) of the newest release's GEMM rows."""
    rows = table[(table["gpu"] == gpu) & (table["framework"] == framework)].reset_index(drop=True)
    rows, _ = select_version(rows)
    rows = rows[rows["op"] == "gemm"]
    return rows.groupby(["m", "n", "k"])["latency_s"].median()


def doubling_scatter_pct(times: pd.Series) -> float:
    """Median |t(2m) / (2 t(m)) - its median| over m >= 1,024, in %."""
    ratios = [times[(2 * m, n, k)] / (2 * t) for (m, n, k), t in times.items()
              if m >= 1024 and (2 * m, n, k) in times.index]
    ratios = np.asarray(ratios)
    return float(np.median(np.abs(ratios - np.median(ratios))) * 100) if len(ratios) else float("nan")


def disagreement_pct(a: pd.Series, b: pd.Series) -> float:
    """Median |a / b - 1| over the shapes both measured, in %."""
    both = pd.concat([a, b], axis=1, join="inner")
    return float((both.iloc[:, 0] / both.iloc[:, 1] - 1).abs().median() * 100) if len(both) else float("nan")


def main() -> None:
    table = read_kernel_table(files("servesim") / "data/calibration/kernels_measured.csv.gz")
    print("| GPU | framework | GEMM fit median | doubling scatter | vs vLLM | vs SGLang | vs TRT-LLM |")
    print("|---|---|---|---|---|---|---|")
    for gpu, prefix in PROFILES.items():
        times = {f: gemm_times(table, gpu, f) for f in FRAMEWORKS}
        for framework in FRAMEWORKS:
            fit = get_profile(f"{prefix}-{framework}")[1]["fit"]["in_sample"]["gemm"]["median_abs_pct"]
            others = [("-" if other == framework else f"{disagreement_pct(times[framework], times[other]):.1f}")
                      for other in FRAMEWORKS]
            print(f"| {gpu} | {framework} | {fit:.1f} | {doubling_scatter_pct(times[framework]):.1f} | "
                  + " | ".join(others) + " |")


if __name__ == "__main__":
    main()
