"""The planner: for each deployment point, the speculation setting with the best speedup.

A deployment point is one combination of the swept keys that describe the situation
(batch size, context length, GPU, model, load, ...); the *knobs* are the swept keys that
describe how to speculate (candidate tokens, tree, gamma, method, draft model). For each
deployment point the plan gives the knob values of the highest mean speedup and of the
runner-up, with their speedups, so a user sees both the answer and how much it matters.

Ties: with replications >= 2 every point has a 95% interval of its mean speedup
(``speedup_ci95_low`` / ``_high``); for the ``speedup`` objective the plan counts the
other settings of the deployment point whose interval overlaps the best's
(``ties_with_best``) and names them (``tied_settings``): the data cannot tell them from
the best. Without intervals (one replication, or another objective) both are empty (NaN).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

KNOBS = ("method", "candidate_tokens", "tree", "draft_model", "gamma")
"""Swept keys that are choices of the speculation configuration."""


def lower_is_better(objective: str) -> bool:
    """Latencies (columns ending in ``_s``) are minimised; everything else maximised."""
    return objective.endswith("_s")


def plan(summary: pd.DataFrame, swept: list[str], objective: str = "speedup") -> pd.DataFrame:
    """One row per deployment point: best and runner-up knob values by ``objective``
    (a summary column), with their objective values."""
    if objective not in summary.columns:
        raise ValueError(f"unknown objective {objective!r}; use a summary column such as "
                         "speedup, spec_e2e_p99_s or spec_goodput_requests_per_s")
    knobs = [k for k in swept if k in KNOBS]
    if not knobs:
        raise ValueError(f"the sweep varies none of the speculation settings {', '.join(KNOBS)}")
    situation = [k for k in swept if k not in KNOBS]
    groups = summary.groupby(situation, sort=False) if situation else [((), summary)]
    rows = []
    for key, points in groups:
        ranked = points.sort_values([objective, "point_id"], ascending=[lower_is_better(objective), True])
        best = ranked.iloc[0]
        row = dict(zip(situation, key if isinstance(key, tuple) else (key,)))
        for k in knobs:
            row[f"best_{k}"] = best[k]
        if objective != "speedup":
            row[f"best_{objective}"] = best[objective]
        row["best_speedup"] = best["speedup"]
        row["best_speedup_p05"] = best["speedup_p05"]
        row["best_speedup_p95"] = best["speedup_p95"]
        row["best_spec_tokens_per_s"] = best["spec_tokens_per_s"]
        row["ties_with_best"], row["tied_settings"] = _ties(ranked, knobs, objective)
        if len(ranked) > 1:
            second = ranked.iloc[1]
            for k in knobs:
                row[f"runner_up_{k}"] = second[k]
            if objective != "speedup":
                row[f"runner_up_{objective}"] = second[objective]
            row["runner_up_speedup"] = second["speedup"]
        else:
            for k in knobs:
                row[f"runner_up_{k}"] = None
            if objective != "speedup":
                row[f"runner_up_{objective}"] = np.nan
            row["runner_up_speedup"] = np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _ties(ranked: pd.DataFrame, knobs: list[str], objective: str) -> tuple[float, str | None]:
    """(how many, which) settings of a deployment point have a speedup interval that
    overlaps the best's (first row of ``ranked``); (NaN, None) without intervals."""
    if objective != "speedup" or "speedup_ci95_low" not in ranked.columns:
        return np.nan, None
    low, high = ranked["speedup_ci95_low"].to_numpy(), ranked["speedup_ci95_high"].to_numpy()
    if np.isnan(low[0]) or np.isnan(high[0]):
        return np.nan, None
    overlap = (low[1:] <= high[0]) & (high[1:] >= low[0])
    tied = ranked.iloc[1:][overlap]
    names = ["; ".join(f"{k}={row[k]}" for k in knobs) for _, row in tied.iterrows()]
    return float(len(names)), " | ".join(names) if names else ""
