"""Measured serving points for tools/e2e_check.py (run on demand; the output is committed).

    pip install aiconfigurator-core==0.12.0
    python tools/extract_e2e.py

Writes ``servesim/data/checks/silicon_e2e_qwen3_32b.csv``: the 16-bit (no quantized GEMM,
no fp8 KV) aggregated-serving points of Qwen3-32B in the package's
``systems/silicon_sample.csv``: vLLM 0.12.0 and SGLang 0.5 on H100 SXM at TP 1-8, TTFT and
TPOT (ms) per ISL, OSL and concurrency (``batch_size``); and ``silicon_e2e_fp8.csv``:
the aggregated-serving points of the catalog's dense models with FP8 linear layers (W8A8,
per-tensor scales: ``gemm_quant_mode = fp8``): Llama-3.1-70B under vLLM and TRT-LLM on
H100, H200 and B200, Qwen3-32B under TRT-LLM (and a few vLLM) on H100, Llama-3.1-8B under
vLLM on H200. Llama-3.1-8B's TRT-LLM points
(``silicon_e2e_llama31_8b.csv``) come from ``../shared/reference/kernels/``.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pandas as pd

COLUMNS = ["backend", "backend_version", "system", "precision", "isl", "osl", "batch_size", "tp_size",
           "silicon_ttft_ms", "silicon_tpot_ms", "file_in_package"]
FP8_MODELS = {"meta-llama/Llama-3.1-70B": "llama-3-1-70b", "Qwen/Qwen3-32B": "qwen3-32b",
              "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3-1-8b"}
"""Dense models of the catalog with FP8 points (W8A8 per-tensor, ``gemm_quant_mode = fp8``)
in the sample, by their Hugging Face name."""


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
    fp8 = pd.read_csv(path)
    fp8 = fp8[fp8["model_path"].isin(FP8_MODELS) & (fp8["gemm_quant_mode"] == "fp8") & (fp8["mode"] == "agg")
              & (fp8["pp_size"] == 1) & (fp8["attention_dp_size"].fillna(1) == 1)]
    fp8 = fp8.assign(model=fp8["model_path"].map(FP8_MODELS), file_in_package="systems/silicon_sample.csv")
    fp8 = fp8.reindex(columns=["model", *COLUMNS[:3], "gemm_quant_mode", *COLUMNS[4:]])
    out = out.with_name("silicon_e2e_fp8.csv")
    fp8.sort_values(["model", "backend", "system", "tp_size", "isl", "osl", "batch_size"]).to_csv(out, index=False)
    print(f"wrote {out}: {len(fp8)} points")
    print(fp8.groupby(["model", "backend", "system"]).size().to_string())


if __name__ == "__main__":
    main()
