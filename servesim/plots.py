"""Figures from a run's Parquet tables (matplotlib: the optional extra ``servesim[plot]``).

* ``speedup_vs_candidates.png``: speedup against candidate tokens, one line per value of
  the other swept key (the Medusa figure's layout), per-request p05-p95 band.
* ``verify_breakdown.png``: time of one speculative iteration (draft + verify) per
  operator group, as a multiple of one autoregressive step, stacked per candidate count;
  acceptance rate and speedup on a second axis. One panel per value of the other key.
* ``request_speedup.png``: per-request paired speedup distributions (box plots) per
  candidate count, one panel per value of the other key.
* ``latency_vs_load.png``: p50/p99 end-to-end latency and TTFT against arrival rate.
* ``width_vs_load.png``: best candidate count against arrival rate.
* ``latency_cdf.png``: TTFT, TPOT and E2E CDFs per arm, for up to 8 points.
* ``kv_usage.png``: KV cache usage over time per arm (steps.parquet's ``kv_used_tokens``
  over the KV capacity), for up to 8 points, with each point's preemptions.

Every figure is written atomically (temporary file, then rename).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

OP_GROUPS = {
    "qkv projection": ["qkv_proj_s"],
    "attention (qk, pv)": ["attn_qk_s", "attn_pv_s"],
    "output projection": ["o_proj_s"],
    "MLP (gate, up, down)": ["mlp_gate_s", "mlp_up_s", "mlp_down_s"],
    "lm_head": ["lm_head_s"],
    "drafting (heads / draft model)": ["draft_heads_s", "draft_model_s"],
}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, out: Path) -> Path:
    plt = _pyplot()
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; figures are ordinary files, like the tables
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def panel_key(summary: pd.DataFrame) -> str | None:
    """The swept key other than candidate_tokens that figures split by (if any)."""
    for c in ("seq_len", "batch_size", "rate_per_s", "model", "gpu", "alpha"):
        if c in summary.columns and summary[c].nunique() > 1:
            return c
    return None


def length_axis(summary: pd.DataFrame) -> tuple[str, str]:
    """(column, axis label) of the speculation length a sweep varies: a draft model's
    ``gamma``, a chain's ``num_speculative_tokens``, else the verify width."""
    method = summary["method"].iloc[0]
    if method == "draft_model" and "gamma" in summary.columns and summary["gamma"].nunique() > 1:
        return "gamma", "drafted tokens per iteration (gamma)"
    if "num_speculative_tokens" in summary.columns and summary["num_speculative_tokens"].nunique() > 1:
        return "num_speculative_tokens", "drafted tokens per step (num_speculative_tokens)"
    return "candidate_tokens", "candidate tokens per sequence (verify width)"


def _title(summary: pd.DataFrame) -> str:
    first = summary.iloc[0]
    return f"{first['model']} on {first['gpu']}, {first['method']}"


def speedup_vs_candidates(summary: pd.DataFrame, out_png: str | Path,
                          reference: pd.DataFrame | None = None,
                          measured: pd.DataFrame | None = None, measured_label: str = "") -> Path:
    """Speedup against candidate tokens per panel value (the seed figure's layout);
    ``reference`` (dotted): the Medusa figure; ``measured`` (dashed): the same sweep under
    measured kernels, so a reader sees where the paper's simulator and real kernels part."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    group = panel_key(summary)
    x_key, x_label = length_axis(summary)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    groups = summary.groupby(group) if group else [(None, summary)]
    for value, rows in groups:
        rows = rows.sort_values(x_key)
        label = f"{group} = {value}" if group else "speedup"
        line, = ax.plot(rows[x_key], rows["speedup"], marker="o", ms=3, label=label)
        ax.fill_between(rows[x_key], rows["speedup_p05"], rows["speedup_p95"],
                        color=line.get_color(), alpha=0.12, linewidth=0)
        if reference is not None and group in reference.columns:
            ref = reference[reference[group] == value].sort_values("candidate_tokens")
            ax.plot(ref["candidate_tokens"], ref["speedup"], ls=":", color=line.get_color(), lw=1)
        if measured is not None and group in measured.columns:
            real = measured[measured[group] == value].sort_values("candidate_tokens")
            ax.plot(real["candidate_tokens"], real["speedup"], ls="--", color=line.get_color(), lw=1, alpha=0.8)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # a count: integer ticks only
    ax.set_xlabel(x_label)
    ax.set_ylabel("speedup over autoregressive decoding (x)")
    batch = summary["batch_size"].iloc[0] if summary["batch_size"].nunique() == 1 else "swept"
    notes = (["dotted: reference figure"] if reference is not None else []) + (
        [f"dashed: {measured_label or 'measured kernels'}"] if measured is not None else [])
    ax.set_title(f"{_title(summary)}, batch {batch}" + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, "lines: full-batch decode throughput ratio; bands: per-request p05-p95",
             fontsize=7, color="grey")
    fig.tight_layout()
    return _save(fig, Path(out_png))


PANEL_FIGURE_MIN_WIDTH = 10.0
"""Inches: the narrowest multi-panel figure, wide enough for its title and the operator
legend (four columns) even with one panel."""


def _panels(n: int):
    plt = _pyplot()
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.6 * cols, PANEL_FIGURE_MIN_WIDTH), 3.2 * rows + 0.6),
                             dpi=110, squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def verify_breakdown(summary: pd.DataFrame, steps: pd.DataFrame, out_png: str | Path) -> Path:
    """Stacked operator times per speculative iteration, in autoregressive steps."""
    group = panel_key(summary)
    steps = steps[steps["replication"] == 0] if "replication" in steps.columns else steps
    steps = steps[steps.stage != "prefill"]
    # compare at one batch size per point: the one the spec arm's iterations ran at most
    iterations = steps[steps.stage != "draft"]
    modal = iterations[iterations.arm == "spec"].groupby("point_id")["batch_size"].agg(lambda b: b.mode().iloc[0])
    steps = steps[steps["batch_size"] == steps["point_id"].map(modal)]
    base = (steps[(steps.arm == "baseline") & (steps.stage == "decode")]
            .groupby("point_id")["duration_s"].mean())
    spec = steps[steps.arm == "spec"]
    counts = spec[spec.stage != "draft"].groupby("point_id").size()
    op_cols = [c for cols in OP_GROUPS.values() for c in cols]
    per_iteration = spec.groupby("point_id")[op_cols].sum().div(counts, axis=0).div(base, axis=0)
    per_iteration = per_iteration.reindex(summary["point_id"])
    x_key, x_label = length_axis(summary)
    values = [None] if group is None else sorted(summary[group].unique())
    fig, axes = _panels(len(values))
    for ax, value in zip(axes, values):
        rows = summary if value is None else summary[summary[group] == value]
        rows = rows.sort_values(x_key)
        x = list(range(len(rows)))
        bottom = [0.0] * len(rows)
        for label, cols in OP_GROUPS.items():
            heights = per_iteration.loc[rows["point_id"], cols].sum(axis=1).tolist()
            ax.bar(x, heights, bottom=bottom, label=label, width=0.75)
            bottom = [b + h for b, h in zip(bottom, heights)]
        ax.set_ylim(0, max(bottom) * 1.08)
        ax.set_xticks(x, [str(n) for n in rows[x_key]], fontsize=7)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel("iteration time / autoregressive step", fontsize=8)
        ax.set_title(f"{group} = {value}" if group else "", fontsize=9)
        twin = ax.twinx()
        twin.plot(x, rows["acceptance_rate"], color="black", marker="o", ms=3, label="acceptance rate")
        twin.plot(x, rows["speedup"], color="crimson", marker="s", ms=3, label="speedup")
        twin.set_ylabel("tokens per step / speedup (x)", fontsize=8)
        twin.set_ylim(0, max(rows["acceptance_rate"].max(), rows["speedup"].max()) * 1.15)
    handles, labels = axes[0].get_legend_handles_labels()
    twin_handles, twin_labels = twin.get_legend_handles_labels()
    fig.legend(handles + twin_handles, labels + twin_labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(f"{_title(summary)}: one speculative iteration, by operator", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.97))
    return _save(fig, Path(out_png))


def request_speedup(summary: pd.DataFrame, requests: pd.DataFrame, out_png: str | Path) -> Path:
    """Box plots of per-request paired speedup (baseline / spec decode time)."""
    group = panel_key(summary)
    decode = requests.assign(decode_s=requests["finish_s"] - requests["first_token_s"])
    keys = ["point_id", "request_id"] + (["replication"] if "replication" in decode.columns else [])
    paired = decode.pivot_table(index=keys, columns="arm", values="decode_s").reset_index()
    paired["speedup"] = paired["baseline"] / paired["spec"]
    x_key, x_label = length_axis(summary)
    values = [None] if group is None else sorted(summary[group].unique())
    fig, axes = _panels(len(values))
    for ax, value in zip(axes, values):
        rows = summary if value is None else summary[summary[group] == value]
        rows = rows.sort_values(x_key)
        data = [paired.loc[paired.point_id == pid, "speedup"].dropna() for pid in rows["point_id"]]
        ax.boxplot(data, tick_labels=[str(n) for n in rows[x_key]], showfliers=False)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel("per-request speedup (x)", fontsize=8)
        ax.set_title(f"{group} = {value}" if group else "", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(f"{_title(summary)}: per-request speedup (box: quartiles, whiskers: 1.5 IQR)",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def _first_loss(rows: pd.DataFrame, column: str) -> float | None:
    """First arrival rate at which the spec arm's ``column`` is worse than baseline's."""
    for _, r in rows.sort_values("rate_per_s").iterrows():
        if r[f"spec_{column}"] > r[f"baseline_{column}"]:
            return float(r["rate_per_s"])
    return None


LOAD_CURVE_KEYS = ("batching", "scheduler", "kv_cache", "quantization", "fp8_activation_quantization",
                   "kv_cache_dtype", "candidate_tokens", "batch_size", "tensor_parallel_size", "model", "gpu")
"""Swept keys that split a latency-under-load figure into curves (those that vary)."""


def latency_vs_load(summary: pd.DataFrame, out_png: str | Path) -> Path:
    """p50/p99 end-to-end latency and TTFT against arrival rate, both arms, one curve per
    setting of the other swept keys (batching policy, quantization, ...); a dotted line
    where speculation stops paying (its p99 end-to-end latency exceeds the baseline's);
    hollow markers: saturated points."""
    plt = _pyplot()
    keys = [c for c in LOAD_CURVE_KEYS if c in summary.columns and summary[c].nunique() > 1]
    groups = list(summary.groupby(keys)) if keys else [((), summary)]
    other = keys[0] if len(keys) == 1 else None
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), dpi=110, sharex=True)
    panels = [("e2e_p50_s", "end-to-end latency p50 (s)"), ("e2e_p99_s", "end-to-end latency p99 (s)"),
              ("ttft_p50_s", "time to first token p50 (s)"), ("ttft_p99_s", "time to first token p99 (s)")]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    # groups that differ only in how to speculate share one baseline (same requests, same
    # random numbers, no speculation): it is drawn once, in black
    shared_baseline = other in ("candidate_tokens",) + SETTING_KEYS

    def curve(ax, rows, arm, metric, style, color, label):
        ax.plot(rows["rate_per_s"], rows[f"{arm}_{metric}"], style, color=color, label=label)
        sat = rows[rows[f"{arm}_saturated"]]
        ok = rows[~rows[f"{arm}_saturated"]]
        ax.plot(ok["rate_per_s"], ok[f"{arm}_{metric}"], "o", ms=3, color=color)
        ax.plot(sat["rate_per_s"], sat[f"{arm}_{metric}"], "o", ms=5, mfc="none", color=color)

    for ax, (metric, label) in zip(axes.flat, panels):
        if shared_baseline:
            curve(ax, groups[0][1].sort_values("rate_per_s"), "baseline", metric, "--", "black", "baseline")
        for i, (value, rows) in enumerate(groups):
            rows = rows.sort_values("rate_per_s")
            color = colors[i % len(colors)]
            name = ", ".join(f"{k} = {v}" for k, v in zip(keys, value if isinstance(value, tuple) else (value,)))
            arms = (("baseline", "-"),) if rows["method"].iloc[0] == "none" else (("baseline", "--"), ("spec", "-"))
            for arm, style in arms:
                if arm == "baseline" and shared_baseline:
                    continue
                curve(ax, rows, arm, metric, style, color, f"{arm} {name}".strip())
            loss = _first_loss(rows, "e2e_p99_s")
            if loss is not None:
                ax.axvline(loss, color=color, ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[1]:
        ax.set_xlabel("arrival rate (requests/s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    columns = 4 if max(map(len, labels), default=0) <= 30 else 2  # (long labels: two to a row)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), columns), fontsize=8, frameon=False)
    same = summary["method"].iloc[0] == "none"  # both arms plain decoding: one curve each
    fig.suptitle(f"{_title(summary)}: latency under load\n("
                 + ("baseline = spec: no speculation; " if same else
                    ("dashed black: baseline" if shared_baseline else "dashed: baseline")
                    + ", solid: speculation; dotted: speculation stops paying at p99; ")
                 + "hollow markers: saturated)", fontsize=9)
    fig.tight_layout(rect=(0, 0.03 + 0.03 * math.ceil(len(labels) / columns), 1, 1))
    return _save(fig, Path(out_png))


def width_vs_load(summary: pd.DataFrame, out_png: str | Path,
                  objective: str = "spec_e2e_mean_s") -> Path:
    """Best candidate count (lowest ``objective``) against arrival rate, and the
    objective per candidate count."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    best = summary.loc[summary.groupby("rate_per_s")[objective].idxmin()].sort_values("rate_per_s")
    left.step(best["rate_per_s"], best["candidate_tokens"], where="mid", marker="o")
    left.set_xlabel("arrival rate (requests/s)")
    left.set_ylabel(f"candidate tokens with the lowest {objective}", fontsize=8)
    left.grid(alpha=0.3)
    for n, rows in summary.groupby("candidate_tokens"):
        rows = rows.sort_values("rate_per_s")
        right.plot(rows["rate_per_s"], rows[objective], marker="o", ms=3, label=f"{n} candidates")
    right.set_yscale("log")
    right.set_xlabel("arrival rate (requests/s)")
    right.set_ylabel(objective, fontsize=8)
    right.legend(fontsize=7)
    right.grid(alpha=0.3, which="both")
    fig.suptitle(f"{_title(summary)}: speculation width under load", fontsize=10)
    fig.tight_layout()
    return _save(fig, Path(out_png))


SETTING_KEYS = ("method", "policy", "num_speculative_tokens", "gamma", "eagle_topk", "acceptance_spread",
                "draft_model")
"""Speculation settings a load study compares (``settings_vs_load``), when swept."""


def settings_vs_load(summary: pd.DataFrame, out_png: str | Path) -> Path:
    """p50 and p99 end-to-end latency, p99 TPOT and goodput against arrival rate, one
    line per speculation setting (every swept key of :data:`SETTING_KEYS`), the
    baseline (no speculation, the same in every point) drawn once; a dotted line
    where a setting stops paying (its p99 end-to-end latency exceeds the baseline's
    from that rate on); hollow markers: saturated points."""
    plt = _pyplot()
    keys = [k for k in SETTING_KEYS if k in summary.columns and summary[k].nunique() > 1]
    groups = list(summary.groupby(keys)) if keys else [((), summary)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), dpi=110, sharex=True)
    panels = [("e2e_p50_s", "end-to-end latency p50 (s)", True), ("e2e_p99_s", "end-to-end latency p99 (s)", True),
              ("tpot_p99_s", "time per output token p99 (s)", True),
              ("goodput_requests_per_s", "goodput (requests/s within the SLOs)", False)]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    base = summary.sort_values("rate_per_s").drop_duplicates("rate_per_s")
    for ax, (metric, label, log) in zip(axes.flat, panels):
        ax.plot(base["rate_per_s"], base[f"baseline_{metric}"], "-", color="black", lw=2, label="no speculation")
        for i, (value, rows) in enumerate(groups):
            rows = rows.sort_values("rate_per_s")
            if rows["method"].iloc[0] == "none":
                continue  # the baseline, drawn once above
            value = value if isinstance(value, tuple) else (value,)
            name = ", ".join(f"{k} {v}" for k, v in zip(keys, value))
            color = colors[i % len(colors)]
            ax.plot(rows["rate_per_s"], rows[f"spec_{metric}"], "-", color=color, marker="o", ms=3, label=name)
            sat = rows[rows["spec_saturated"]]
            ax.plot(sat["rate_per_s"], sat[f"spec_{metric}"], "o", ms=6, mfc="none", color=color)
            loss = _stops_paying(rows)
            if loss is not None:
                ax.axvline(loss, color=color, ls=":", lw=1)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    for ax in axes[1]:
        ax.set_xlabel("arrival rate (requests/s)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    rows = -(-len(labels) // 3)
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=3, frameon=False)
    first = summary.iloc[0]
    fig.suptitle(f"{first['model']} on {first['gpu']}: speculation settings under load\n(black: no speculation; dotted: a setting "
                 "stops paying, its p99 latency above the baseline's from there on; hollow: saturated)", fontsize=9)
    fig.tight_layout(rect=(0, 0.03 * rows + 0.01, 1, 1))
    return _save(fig, Path(out_png))


def _stops_paying(rows: pd.DataFrame) -> float | None:
    """The lowest arrival rate from which on the spec arm's p99 end-to-end latency stays
    above the baseline's (None if it pays at the highest rate)."""
    worse = (rows["spec_e2e_p99_s"] > rows["baseline_e2e_p99_s"]).tolist()
    rates = rows["rate_per_s"].tolist()
    if not worse or not worse[-1]:
        return None
    i = len(worse) - 1
    while i > 0 and worse[i - 1]:
        i -= 1
    return float(rates[i])


CDF_POINTS = 8
"""Most points a latency-CDF figure draws (evenly spread over the sweep)."""
CDF_LABEL_KEYS = ("batching", "scheduler", "kv_cache", "quantization", "fp8_activation_quantization",
                  "kv_cache_dtype", "method", "draft_model", "policy", "gamma",
                  "num_speculative_tokens", "candidate_tokens", "batch_size", "seq_len", "tensor_parallel_size",
                  "rate_per_s")
"""Swept keys that name a point in the CDF legend (those that vary)."""


def _spread_points(summary: pd.DataFrame) -> list:
    """The point ids a per-point figure draws: all, or :data:`CDF_POINTS` evenly spread."""
    ids = summary["point_id"].tolist()
    if len(ids) > CDF_POINTS:
        ids = [ids[round(i * (len(ids) - 1) / (CDF_POINTS - 1))] for i in range(CDF_POINTS)]
    return ids


def _label_keys(summary: pd.DataFrame) -> list[str]:
    """The :data:`CDF_LABEL_KEYS` that vary between the summary's points."""
    return [k for k in CDF_LABEL_KEYS if k in summary.columns and summary[k].nunique() > 1]


def _point_name(row, keys: list[str], point) -> str:
    """A point's legend label: its varying keys, or its id."""
    return ", ".join(f"{k} = {row[k]:g}" if isinstance(row[k], float) else f"{k} = {row[k]}"
                     for k in keys) or f"point {point}"


def latency_cdf(summary: pd.DataFrame, requests: pd.DataFrame, out_png: str | Path) -> Path:
    """Empirical CDFs of TTFT, TPOT and E2E latency per arm (baseline dashed, spec
    solid), one colour per point (at most :data:`CDF_POINTS`, evenly spread), from the
    finished requests of replication 0; log-scaled time axes."""
    plt = _pyplot()
    ids = _spread_points(summary)
    done = requests[(requests["status"] == "finished") & requests["point_id"].isin(ids)]
    if "replication" in done.columns:
        done = done[done["replication"] == 0]
    done = done.assign(ttft_s=done["first_token_s"] - done["arrival_s"], e2e_s=done["finish_s"] - done["arrival_s"],
                       tpot_s=(done["finish_s"] - done["first_token_s"]) / (done["output_len"] - 1))
    keys = _label_keys(summary)
    from matplotlib.ticker import NullFormatter
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6), dpi=110)
    colours = plt.get_cmap("viridis")
    arms = ("baseline",) if (summary["method"] == "none").all() else ("baseline", "spec")
    for ax, (column, label) in zip(axes, (("ttft_s", "time to first token (s)"), ("tpot_s", "time per output token (s)"),
                                          ("e2e_s", "end-to-end latency (s)"))):
        for i, point in enumerate(ids):
            colour = colours(i / max(1, len(ids) - 1))
            row = summary[summary["point_id"] == point].iloc[0]
            name = _point_name(row, keys, point)
            for arm in arms:
                values = done[(done["point_id"] == point) & (done["arm"] == arm)][column]
                values = np.sort(values[np.isfinite(values) & (values > 0)].to_numpy())
                if values.size:
                    ax.step(values, np.arange(1, values.size + 1) / values.size, where="post", color=colour,
                            linestyle="--" if arm == "baseline" and len(arms) == 2 else "-", linewidth=1.2,
                            label=name if arm == arms[-1] else None)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # (minor labels collide on a short decade span)
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.01)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    rows = math.ceil(len(labels) / 4)
    styles = "dashed: baseline, solid: " + ("spec" if len(arms) == 2 else "baseline")
    fig.suptitle(f"{_title(summary)}: latency distributions per point ({styles})", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.035 * rows, 1, 0.95))
    return _save(fig, Path(out_png))


KV_BINS = 1500
"""Time bins of ``kv_usage.png`` per point and arm (a long run has millions of steps)."""


def kv_usage(summary: pd.DataFrame, steps: pd.DataFrame, out_png: str | Path) -> Path:
    """KV cache usage over simulated time, one panel per arm, one line per point (at
    most :data:`CDF_POINTS`, evenly spread; replication 0): each step's
    ``kv_used_tokens`` (what the cache held when the step started) over the run's KV
    capacity, in percent (vLLM's ``kv_cache_usage_perc`` gauge). With more steps than
    :data:`KV_BINS`, the highest value per time bin is drawn (peaks, where preemption
    happens, stay visible). Each point's label counts its preemptions."""
    plt = _pyplot()
    ids = _spread_points(summary)
    steps = steps[steps["point_id"].isin(ids)]
    if "replication" in steps.columns:
        steps = steps[steps["replication"] == 0]
    keys = _label_keys(summary)
    arms = ("baseline",) if (summary["method"] == "none").all() else ("baseline", "spec")
    fig, axes = plt.subplots(1, len(arms), figsize=(max(10, 6 * len(arms)), 4.4), dpi=110, squeeze=False)
    colours = plt.get_cmap("viridis")
    for ax, arm in zip(axes[0], arms):
        for i, point in enumerate(ids):
            row = summary[summary["point_id"] == point].iloc[0]
            capacity = row["kv_capacity_tokens"]
            mine = steps[(steps["point_id"] == point) & (steps["arm"] == arm)]
            if mine.empty or not capacity or not np.isfinite(capacity):
                continue
            t = mine["start_s"].to_numpy()
            usage = mine["kv_used_tokens"].to_numpy() / capacity * 100
            if t.size > KV_BINS:
                edges = np.linspace(t[0], t[-1], KV_BINS + 1)
                which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, KV_BINS - 1)
                peak = np.full(KV_BINS, np.nan)
                np.fmax.at(peak, which, usage)
                keep = ~np.isnan(peak)
                t, usage = edges[:-1][keep], peak[keep]
            name = _point_name(row, keys, point)
            preempted = row.get(f"{arm}_preemptions", 0)
            ax.step(t, usage, where="post", color=colours(i / max(1, len(ids) - 1)), linewidth=1.0,
                    label=f"{name} ({int(preempted)} preemptions)" if preempted == preempted else name)
        ax.set_title(arm, fontsize=10)
        ax.set_xlabel("simulated time (s)")
        ax.set_ylabel("KV cache usage (% of capacity)")
        ax.set_ylim(0, 105)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"{_title(summary)}: KV cache usage over time"
                 + (f" (highest per 1/{KV_BINS} of the run)" if len(steps) > KV_BINS else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return _save(fig, Path(out_png))
