"""Measured serving points for tools/e2e_check.py (run on demand; the output is committed).

    pip install aiconfigurator-core==0.12.0
    python tools/extract_e2e.py

Writes ``servesim/data/checks/silicon_e2e_qwen3_32b.csv``: the 16-bit (no quantized GEMM,
no fp8 KV) aggregated-serving points of Qwen3-32B in the package's
``systems/silicon_sample.csv``: vLLM 0.12.0 and SGLang 0.5 on H100 SXM at TP 1-8, TTFT and
TPOT (ms) per ISL, OSL and concurrency (``batch_size``). Llama-3.1-8B's TRT-LLM points
(``silicon_e2e_llama31_8b.csv``) come from ``../shared/reference/kernels/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

COLUMNS = ["backend", "backend_version", "system", "precision", "isl", "osl", "batch_size", "tp_size",
           "silicon_ttft_ms", "silicon_tpot_ms", "file_in_package"]


def main() -> None:
    path = Path(str(resources.files("aiconfigurator_core").joinpath("systems", "silicon_sample.csv")))
    d = pd.read_csv(path)
    d = d[(d["model_path"] == "Qwen/Qwen3-32B") & d["precision"].isna() & d["gemm_quant_mode"].isna()
          & (d["mode"] == "agg") & d["attention_dp_size"].isna() & (d["system"] == "h100_sxm")]
    d = d.assign(file_in_package="systems/silicon_sample.csv").reindex(columns=COLUMNS)
    out = Path(__file__).resolve().parents[1] / "servesim/data/checks/silicon_e2e_qwen3_32b.csv"
    d.sort_values(["backend", "tp_size", "isl", "osl", "batch_size"]).to_csv(out, index=False)
    print(f"wrote {out}: {len(d)} points")
    print(d.groupby(["backend", "backend_version", "tp_size"]).size().to_string())


if __name__ == "__main__":
    main()
