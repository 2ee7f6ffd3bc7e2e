"""README's table of the bundled profiles' fit errors, from their ``[fit]`` reports
(run on demand, after tools/calibrate_all.sh).

    python tools/fit_table.py
"""

from __future__ import annotations

from servesim.hardware import get_profile, profile_names
from servesim.hardware.calibrate import left_out_as_unrepresentative

OPS = ("gemm", "decode_attention", "prefill_attention", "elementwise", "allreduce")


def cell(fit: dict, op: str) -> str:
    ins, out = fit.get("in_sample", {}).get(op), fit.get("out_of_sample", {}).get(op)
    if not ins:
        return "left out (proxy)" if left_out_as_unrepresentative(fit, op) else "no data"
    held = f"{out['median_abs_pct']:.1f}" if out else "-"
    return f"{ins['median_abs_pct']:.1f} / {ins['p90_abs_pct']:.0f} · {held}"


def qkv(fit: dict) -> str:
    rows = fit.get("qkv_scaling", [])
    if not rows:
        return "-"
    worst = max(rows, key=lambda r: abs(r["error_pct"]))
    within = sum(abs(r["error_pct"]) <= 10 for r in rows)
    return f"{worst['error_pct']:+.0f}% at M = {worst['m']} ({within} of {len(rows)} within 10%)"


def main() -> None:
    print("| profile | GEMM | decode attention | prefill attention | elementwise | all-reduce "
          "| qkv t(M)/t(1), worst of M = 16..4096 |")
    print("|---|---|---|---|---|---|---|")
    for name in profile_names():
        fit = get_profile(name)[1].get("fit", {})
        if "in_sample" not in fit:
            continue
        print(f"| `{name}` | " + " | ".join(cell(fit, op) for op in OPS) + f" | {qkv(fit)} |")


if __name__ == "__main__":
    main()
