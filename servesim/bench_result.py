"""``vllm bench serve`` result files: servesim's summary in their keys (``summary.json``).

A vLLM result file (``vllm bench serve --save-result``) is one JSON object: the traffic
(``request_rate``, ``burstiness``, ``max_concurrency``, ``num_prompts``), the totals
(``duration`` s, ``completed``, ``failed``, ``total_input_tokens``,
``total_output_tokens``), throughputs (``request_throughput`` req/s,
``output_throughput`` and ``total_token_throughput`` tok/s, ``request_goodput``) and,
for ``ttft``, ``tpot``, ``itl`` and ``e2el``, ``mean_<m>_ms``, ``median_<m>_ms``,
``std_<m>_ms`` and ``p<q>_<m>_ms`` per selected percentile. (Keys matched to
``vllm/benchmarks/serve.py``, vLLM main, read 2026-12-01.)

``summary.json`` is a JSON list of such objects, one per point and arm (the baseline,
and the speculative arm when the point speculates), each also carrying ``point_id``,
``arm``, ``backend = "servesim"``, the point's swept parameters and, for a speculative
arm, vLLM's ``spec_decode_acceptance_rate`` (percent), ``spec_decode_acceptance_length``
and ``spec_decode_per_position_acceptance_rates``. Every figure is the summary's,
converted (s -> ms); ``duration`` is the arm's busy window (first arrival to last
finish), over which the throughputs are taken. Not written: the per-request lists of
``--save-detailed`` and ``max_output_tokens_per_s``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from servesim.metrics import percentile_names, with_required

BENCH_METRICS = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2e"}
"""vLLM's metric names -> servesim's summary column stems."""


def _number(value):
    """A JSON-safe value: NaN -> None, numpy scalars -> Python."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _traffic(values: dict) -> dict:
    """``request_rate``, ``burstiness``, ``max_concurrency`` as vLLM writes them."""
    arrival = values["arrival"]
    rate = values["rate_per_s"] if arrival in ("poisson", "gamma") else "inf"
    # vLLM's burstiness is the gamma shape of the inter-arrival times: 1 / cv^2
    burstiness = 1.0 / values["cv"] ** 2 if arrival == "gamma" else 1.0
    return {"request_rate": rate, "burstiness": burstiness,
            "max_concurrency": values["clients"] if arrival == "closed_loop" else None}


def bench_records(summary: pd.DataFrame, points: dict[int, dict] | None = None,
                  swept: tuple[str, ...] = ()) -> list[dict]:
    """One vLLM-style result object per point and arm of a summary table (see module
    docstring); ``points`` maps point ids to their scenario values (for the traffic
    keys and the percentiles), ``swept`` names the swept keys to carry."""
    records = []
    for row in summary.to_dict("records"):
        values = (points or {}).get(int(row["point_id"]), {})
        percentiles = with_required(values.get("percentiles", (50, 90, 95, 99)))
        arms = ("baseline",) if row["method"] == "none" else ("baseline", "spec")
        for arm in arms:
            record = {"point_id": int(row["point_id"]), "arm": arm, "backend": "servesim",
                      "model_id": row["model"], "gpu": row["gpu"], "method": row["method"] if arm == "spec" else "none"}
            if values:
                record.update(_traffic(values))
                record["num_prompts"] = int(row[f"{arm}_requests"])
            record.update({
                "duration": row[f"{arm}_duration_s"],
                "completed": row[f"{arm}_finished"],
                "failed": row[f"{arm}_rejected"] + row[f"{arm}_unfinished"],
                "total_input_tokens": row[f"{arm}_prompt_tokens"],
                "total_output_tokens": row[f"{arm}_output_tokens"],
                "request_throughput": row[f"{arm}_requests_per_s"],
                "request_goodput": (row[f"{arm}_goodput_requests_per_s"]
                                    if values and (math.isfinite(values["ttft_slo_s"]) or math.isfinite(values["tpot_slo_s"]))
                                    else None),
                "output_throughput": row[f"{arm}_output_tokens_per_s"],
                "total_token_throughput": row[f"{arm}_total_tokens_per_s"],
                "max_concurrent_requests": row[f"{arm}_max_concurrent_requests"],
            })
            for bench, stem in BENCH_METRICS.items():
                prefix = f"{arm}_{stem}"
                record[f"mean_{bench}_ms"] = row[f"{prefix}_mean_s"] * 1e3
                record[f"median_{bench}_ms"] = row[f"{prefix}_p50_s"] * 1e3
                record[f"std_{bench}_ms"] = row[f"{prefix}_std_s"] * 1e3
                for name in percentile_names(percentiles):
                    if f"{prefix}_{name}_s" in row:
                        record[f"{name}_{bench}_ms"] = row[f"{prefix}_{name}_s"] * 1e3
            if arm == "spec":
                record["spec_decode_acceptance_rate"] = row["draft_acceptance_rate"] * 100
                record["spec_decode_acceptance_length"] = row["mean_acceptance_length"]
                record["spec_decode_per_position_acceptance_rates"] = [
                    _number(row[c]) for c in sorted((c for c in row if c.startswith("acceptance_rate_pos")),
                                                    key=lambda c: int(c.removeprefix("acceptance_rate_pos")))
                    if not math.isnan(row[c])]
            for key in swept:
                record.setdefault(key, row.get(key))
            records.append({k: _number(v) for k, v in record.items()})
    return records


def write_bench_json(path: str | Path, summary: pd.DataFrame, points: dict[int, dict] | None = None,
                     swept: tuple[str, ...] = ()) -> Path:
    """Write :func:`bench_records` of ``summary`` as JSON to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(bench_records(summary, points, swept), indent=1, allow_nan=False) + "\n",
                    encoding="utf-8")
    return path
