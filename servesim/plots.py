"""Figures from a run's Parquet tables (matplotlib, optional extra ``servesim[plot]``).

``speedup_vs_candidates``: speedup against candidate tokens, one line per value of the
other swept key (the Medusa figure's layout), with the per-request p05-p95 band.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def speedup_vs_candidates(summary: pd.DataFrame, out_png: str | Path, reference: pd.DataFrame | None = None) -> Path:
    """Write the figure to ``out_png`` (atomically) and return its path."""
    import os
    import tempfile

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    varying = [c for c in ("seq_len", "batch_size", "model", "gpu")
               if c in summary.columns and summary[c].nunique() > 1]
    group = varying[0] if varying else None
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    groups = summary.groupby(group) if group else [(None, summary)]
    for i, (value, rows) in enumerate(groups):
        rows = rows.sort_values("candidate_tokens")
        label = f"{group} = {value}" if group else "speedup"
        line, = ax.plot(rows["candidate_tokens"], rows["speedup"], marker="o", ms=3, label=label)
        ax.fill_between(rows["candidate_tokens"], rows["speedup_p05"], rows["speedup_p95"],
                        color=line.get_color(), alpha=0.12, linewidth=0)
        if reference is not None and group in reference.columns:
            ref = reference[reference[group] == value].sort_values("candidate_tokens")
            ax.plot(ref["candidate_tokens"], ref["speedup"], ls=":", color=line.get_color(), lw=1)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("candidate tokens per sequence (verify width)")
    ax.set_ylabel("speedup over autoregressive decoding (x)")
    first = summary.iloc[0]
    ax.set_title(f"{first['model']} on {first['gpu']}, batch {first['batch_size']}"
                 + ("  (dotted: reference figure)" if reference is not None else ""), fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.text(0.01, 0.01, "lines: full-batch decode throughput ratio; bands: per-request p05-p95",
             fontsize=7, color="grey")
    fig.tight_layout()
    out = Path(out_png)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(tmp)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out
