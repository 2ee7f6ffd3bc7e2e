"""README's table of the bundled profiles' fit errors, from their ``[fit]`` reports, and
how many profiles meet the calibration targets (median |error| <= 5%, p90 <= 15%,
out-of-sample median <= 10%, qkv t(M)/t(1) within 10% at every M) per op class (run on
demand, after tools/calibrate_all.sh).

    python tools/fit_table.py
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from servesim.hardware import get_gpu, get_profile, gpu_names, profile_names
from servesim.hardware.calibrate import calibration_rows, left_out_as_unrepresentative
from servesim.hardware.kernel_table import error_report, predict_op, read_kernel_table

WHOLE_LAYER_GEMMS = {(12288, 4096), (6144, 4096), (4096, 4096), (10240, 4096), (16384, 4096), (51200, 4096),
                     (4096, 10240), (4096, 12288), (4096, 16384)}
"""(n, k) of ../shared/reference/kernels/gemm_llama_shapes_measured.csv: Llama-2-7B's and
Llama-3-8B's whole (TP 1) layer GEMMs and their grid neighbours, the shapes the
calibration targets were first measured on; the bundled table adds those layers'
tensor-parallel shards (tools/extract_calibration.py)."""

OPS = ("gemm", "decode_attention", "prefill_attention", "elementwise", "allreduce")
WHOLE_NAMES = {"gemm": "GEMM, whole layers", "decode_attention": "decode attention, whole layers (32 heads)",
               "prefill_attention": "prefill attention, whole layers (32 heads)"}
NAMES = {"gemm": "GEMM", "decode_attention": "decode attention", "prefill_attention": "prefill attention",
         "elementwise": "elementwise"}


def cell(fit: dict, op: str) -> str:
    ins, out = fit.get("in_sample", {}).get(op), fit.get("out_of_sample", {}).get(op)
    if not ins:
        return "left out (proxy)" if left_out_as_unrepresentative(fit, op) else "no data"
    held = f"{out['median_abs_pct']:.1f}" if out else "-"
    return f"{ins['median_abs_pct']:.1f} / {ins['p90_abs_pct']:.1f} · {held}"


@lru_cache(maxsize=1)
def bundled_table():
    return read_kernel_table(files("servesim") / "data/calibration/kernels_measured.csv.gz")


WHOLE_LAYER_HEADS = {(32, 8), (32, 32)}
"""(query heads, KV heads) of ../shared/reference/kernels/'s attention tables: a whole
(TP 1) layer of Llama-3-8B and Llama-2-7B, at head_dim 128; the bundled table adds the
head counts of tensor-parallel shards and head sizes 64 and 256
(tools/extract_calibration.py)."""


def calibration_of(name: str):
    """(profile, its GPU, the bundled table's rows its fit used) of bundled profile
    ``name``, or None for a profile not calibrated on the bundled table."""
    profile, content = get_profile(name)
    fit = content.get("fit", {})
    measured, framework = fit.get("gpu_measured"), fit.get("framework")
    gpus = [get_gpu(gpu_name) for gpu_name in gpu_names()]
    gpu = next((g for g in gpus if g.measured_as == measured and g.provenance.startswith("calibrated")), None)
    if gpu is None or "in_sample" not in fit:
        return None
    rows, _ = calibration_rows(bundled_table(), gpu, framework, measured)
    return profile, gpu, rows


def whole_layer(name: str, op: str = "gemm") -> dict | None:
    """In-sample |error| statistics of bundled profile ``name``'s ``op`` rows at the
    whole-layer shapes only (GEMMs: :data:`WHOLE_LAYER_GEMMS`; attention:
    :data:`WHOLE_LAYER_HEADS`), recomputed from the bundled table (None for a profile not
    calibrated on it)."""
    calibrated = calibration_of(name)
    if calibrated is None or not get_profile(name)[1]["fit"]["in_sample"].get(op):
        return None
    profile, gpu, rows = calibrated
    rows = rows[rows["op"] == op]
    if op == "gemm":
        keep = [(int(n), int(k)) in WHOLE_LAYER_GEMMS for n, k in zip(rows["n"], rows["k"])]
    else:
        keep = [(int(h), int(kv)) in WHOLE_LAYER_HEADS and d == 128
                for h, kv, d in zip(rows["num_heads"], rows["num_kv_heads"], rows["head_dim"])]
    rows = rows[keep]
    return error_report(rows["latency_s"].to_numpy(float), predict_op(op, rows, gpu, profile))


def whole_cell(name: str, op: str = "gemm") -> str:
    stats = whole_layer(name, op)
    return f"{stats['median_abs_pct']:.1f} / {stats['p90_abs_pct']:.1f}" if stats else "-"


def qkv(fit: dict) -> str:
    rows = fit.get("qkv_scaling", [])
    if not rows:
        return "-"
    worst = max(rows, key=lambda r: abs(r["error_pct"]))
    within = sum(abs(r["error_pct"]) <= 10 for r in rows)
    return f"{worst['error_pct']:+.0f}% at M = {worst['m']} ({within} of {len(rows)} within 10%)"


def main() -> None:
    print("| profile | GEMM | GEMM, whole layers | decode attention | decode, whole layers | prefill attention "
          "| prefill, whole layers | elementwise | all-reduce | qkv t(M)/t(1), worst of M = 16..4096 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in profile_names():
        fit = get_profile(name)[1].get("fit", {})
        if "in_sample" not in fit:
            continue
        cells = []
        for op in OPS:
            cells.append(cell(fit, op))
            if op in WHOLE_NAMES:
                cells.append(whole_cell(name, op))
        print(f"| `{name}` | " + " | ".join(cells) + f" | {qkv(fit)} |")
    print()
    print(targets())
    print()
    print(by_head_size())


HEAD_SIZES = (64, 128, 256)


def by_head_size() -> str:
    """In-sample median / p90 |error| % of every calibrated profile's attention rows by
    head size, recomputed from the bundled table, as a Markdown table ("-": no rows)."""
    header = [f"{NAMES[op]}, head_dim {d}" for op in ("decode_attention", "prefill_attention") for d in HEAD_SIZES]
    lines = ["| profile | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
    for name in profile_names():
        calibrated = calibration_of(name)
        if calibrated is None:
            continue
        profile, gpu, rows = calibrated
        cells = []
        for op in ("decode_attention", "prefill_attention"):
            for d in HEAD_SIZES:
                part = rows[(rows["op"] == op) & (rows["head_dim"] == d)]
                if not len(part):
                    cells.append("-")
                    continue
                stats = error_report(part["latency_s"].to_numpy(float), predict_op(op, part, gpu, profile))
                cells.append(f"{stats['median_abs_pct']:.1f} / {stats['p90_abs_pct']:.1f}")
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)


TARGETS = (("median_abs_pct", 5.0, "in_sample"), ("p90_abs_pct", 15.0, "in_sample"),
           ("median_abs_pct", 10.0, "out_of_sample"))


def targets() -> str:
    """Profiles meeting each target, per op class with data, as a Markdown table."""
    names = [name for name in profile_names() if "in_sample" in get_profile(name)[1].get("fit", {})]
    fits = [get_profile(name)[1]["fit"] for name in names]
    lines = ["| op class | profiles | median <= 5% | p90 <= 15% | out-of-sample median <= 10% |",
             "|---|---|---|---|---|"]
    for op in OPS[:4]:
        with_data = [fit for fit in fits if fit["in_sample"].get(op)]
        counts = [sum(fit[section].get(op, {}).get(key, float("inf")) <= limit for fit in with_data)
                  for key, limit, section in TARGETS]
        lines.append(f"| {NAMES[op]} | {len(with_data)} | " + " | ".join(map(str, counts)) + " |")
        if op in WHOLE_NAMES:
            whole = [whole_layer(name, op) for name, fit in zip(names, fits) if fit["in_sample"].get(op)]
            counts = [sum(w is not None and w[key] <= limit for w in whole) for key, limit, _ in TARGETS[:2]]
            lines.append(f"| {WHOLE_NAMES[op]} | {sum(w is not None for w in whole)} | "
                         + " | ".join(map(str, counts)) + " | - |")
    within = sum(bool(fit.get("qkv_scaling")) and all(abs(r["error_pct"]) <= 10 for r in fit["qkv_scaling"])
                 for fit in fits)
    lines.append(f"\nqkv t(M)/t(1) within 10% at every M: {within} of {len(fits)} profiles.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
