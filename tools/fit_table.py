"""README's table of the bundled profiles' fit errors, from their ``[fit]`` reports, and
how many profiles meet the calibration targets (median |error| <= 5%, p90 <= 15%,
out-of-sample median <= 10%, qkv t(M)/t(1) within 10% at every M) per op class (run on
demand, after tools/calibrate_all.sh).

    python tools/fit_table.py
"""

from __future__ import annotations

from servesim.hardware import get_profile, profile_names
from servesim.hardware.calibrate import left_out_as_unrepresentative

OPS = ("gemm", "decode_attention", "prefill_attention", "elementwise", "allreduce")
NAMES = {"gemm": "GEMM", "decode_attention": "decode attention", "prefill_attention": "prefill attention",
         "elementwise": "elementwise"}


def cell(fit: dict, op: str) -> str:
    ins, out = fit.get("in_sample", {}).get(op), fit.get("out_of_sample", {}).get(op)
    if not ins:
        return "left out (proxy)" if left_out_as_unrepresentative(fit, op) else "no data"
    held = f"{out['median_abs_pct']:.1f}" if out else "-"
    return f"{ins['median_abs_pct']:.1f} / {ins['p90_abs_pct']:.1f} · {held}"


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
    print()
    print(targets())


TARGETS = (("median_abs_pct", 5.0, "in_sample"), ("p90_abs_pct", 15.0, "in_sample"),
           ("median_abs_pct", 10.0, "out_of_sample"))


def targets() -> str:
    """Profiles meeting each target, per op class with data, as a Markdown table."""
    fits = [get_profile(name)[1]["fit"] for name in profile_names()
            if "in_sample" in get_profile(name)[1].get("fit", {})]
    lines = ["| op class | profiles | median <= 5% | p90 <= 15% | out-of-sample median <= 10% |",
             "|---|---|---|---|---|"]
    for op in OPS[:4]:
        with_data = [fit for fit in fits if fit["in_sample"].get(op)]
        counts = [sum(fit[section].get(op, {}).get(key, float("inf")) <= limit for fit in with_data)
                  for key, limit, section in TARGETS]
        lines.append(f"| {NAMES[op]} | {len(with_data)} | " + " | ".join(map(str, counts)) + " |")
    within = sum(bool(fit.get("qkv_scaling")) and all(abs(r["error_pct"]) <= 10 for r in fit["qkv_scaling"])
                 for fit in fits)
    lines.append(f"\nqkv t(M)/t(1) within 10% at every M: {within} of {len(fits)} profiles.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
