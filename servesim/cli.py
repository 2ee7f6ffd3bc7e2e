"""Command line: ``servesim run | plan | validate | plot | scenarios | init | report | tree | list | cost |
calibrate | profile``.

Errors in the user's input (scenario files, overrides, names) print one message naming
the file and key and exit with status 2, without a traceback and without writing.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from importlib import resources
from pathlib import Path

import pandas as pd

from servesim import __version__
from servesim.costmodel import CostModel, STAGES
from servesim.hardware import (ProfileError, framework_names, get_framework, get_gpu, get_profile,
                               gpu_names, profile_names)
from servesim.models import get_model, model_names
from servesim.scenario import ScenarioError, load_scenario

SEED_SCENARIO = "medusa_llama7b_bs4_seqlen.toml"


class UsageError(Exception):
    """Bad command-line input; the message is for the user."""


class Progress:
    """A progress bar of sweep points on stderr (tqdm): points done, points per second
    and time left; silent when stderr is not a terminal (CI logs, pipes)."""

    def __init__(self) -> None:
        self.bar = None
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="point", desc="points", disable=None,
                            dynamic_ncols=True, leave=True)
        self.bar.update(done - self.done)
        self.done = done
        if done == total:
            self.bar.close()


def _jobs(value: str) -> int:
    import os
    if value == "auto":
        return os.cpu_count() or 1
    try:
        jobs = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', got {value!r}")
    if jobs < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1 process, got {jobs}")
    return jobs


def bundled_scenario(name: str = SEED_SCENARIO) -> tuple[str, str]:
    """(display path, text) of a scenario shipped inside the package."""
    path = resources.files("servesim").joinpath("data", "scenarios", name)
    return f"<bundled>/{name}", path.read_text(encoding="utf-8")


def bundled_scenarios() -> dict[str, str]:
    """Bundled scenario names (file stems) -> their one-line ``description``."""
    import tomllib
    folder = resources.files("servesim").joinpath("data", "scenarios")
    names = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            text = entry.read_text(encoding="utf-8")
            names[entry.name.removesuffix(".toml")] = tomllib.loads(text).get("description", "")
    return names


def load_scenario_arg(arg: str, overrides: list[str] = ()):
    """A scenario from the command line: a TOML file, or the name of a bundled one
    (``servesim scenarios``) when no such file exists."""
    path = Path(arg)
    name = arg.removesuffix(".toml")
    if not path.exists() and "/" not in arg and name in bundled_scenarios():
        source, text = bundled_scenario(f"{name}.toml")
        return load_scenario(source, overrides, text=text)
    if not path.exists() and "/" not in arg and not path.suffix:
        raise UsageError(f"{arg}: no such file, and no bundled scenario of that name; bundled: "
                         + ", ".join(bundled_scenarios()) + " (servesim scenarios)")
    return load_scenario(arg, overrides)


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, got {text!r}")
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


# -- tables for the terminal ------------------------------------------------------------

def _readable(v: float) -> str:
    """Three significant digits, without exponents below a billion (12,400 not 1.24e+04)."""
    if v != v or abs(v) < 1000 or abs(v) >= 1e9:
        return f"{v:.3g}"
    return f"{v:,.0f}"


LATENCY_ROWS = (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"), ("E2E", "e2e"))


def latency_table(summary: pd.DataFrame, swept: list[str]) -> str:
    """A load study per point: TTFT, TPOT, ITL and E2E latency p50 and p99 per arm
    (ms) with the spec / baseline ratios, one line per metric; then per point the
    request and output-token throughput, goodput where an SLO is set, and whether the
    queue was still growing (saturated)."""
    keys = [k for k in swept if k in summary.columns and k != "method"] or ["point_id"]
    arms = ("baseline",) if (summary["method"] == "none").all() else ("baseline", "spec")
    shown = summary if len(summary) <= PRINTED_ROWS else summary.head(PRINTED_ROWS)
    lines = []
    for _, row in shown.iterrows():
        # (a run written before a metric existed lacks its columns: it is left out)
        metrics = [(label, stem) for label, stem in LATENCY_ROWS if f"baseline_{stem}_p99_s" in summary.columns]
        for i, (label, stem) in enumerate(metrics):
            line = {k: (row[k] if i == 0 else "") for k in keys}
            line["metric (ms)"] = label
            for arm in arms:
                short = "base" if arm == "baseline" else "spec"
                for q in ("p50", "p99"):
                    line[f"{short} {q}"] = row[f"{arm}_{stem}_{q}_s"] * 1e3
            if len(arms) == 2:
                for q in ("p50", "p99"):
                    base = row[f"baseline_{stem}_{q}_s"]
                    line[f"ratio {q}"] = row[f"spec_{stem}_{q}_s"] / base if base > 0 else float("nan")
            lines.append(line)
    fmt = {"float_format": _readable}
    text = ("latency per point (ms; ratio = spec / baseline, below 1 = speculation helps)\n"
            + pd.DataFrame(lines).to_string(index=False, **fmt))
    load = shown[keys].copy()
    goodput = any(c in summary.columns and summary[c].map(lambda v: v != float("inf")).any()
                  for c in ("ttft_slo_s", "tpot_slo_s"))
    for arm in arms:
        short = "base" if arm == "baseline" else "spec"
        if f"{arm}_requests_per_s" in shown.columns:
            load[f"{short} req/s"] = shown[f"{arm}_requests_per_s"]
        load[f"{short} out tok/s"] = shown[f"{arm}_output_tokens_per_s"]
        if goodput:
            load[f"{short} goodput req/s"] = shown[f"{arm}_goodput_requests_per_s"]
        load[f"{short} saturated"] = shown[f"{arm}_saturated"].map({True: "yes", False: "no"})
    text += "\n\nthroughput per point (over each arm's busy window)\n" + load.to_string(index=False, **fmt)
    if len(summary) > PRINTED_ROWS:
        text += f"\n... {len(summary) - PRINTED_ROWS:,} more points in summary.parquet"
    if len(arms) == 2 and "rate_per_s" in keys:
        text += "\n\n" + stops_paying(summary, [k for k in keys if k != "rate_per_s"])
    return text


def stops_paying(summary: pd.DataFrame, others: list[str]) -> str:
    """Per setting of the other swept keys: the lowest arrival rate at which the spec
    arm's p99 E2E latency exceeds the baseline's (where speculation stops helping p99)."""
    lines = ["where speculation stops helping p99 E2E latency (lowest rate with spec p99 > baseline p99):"]
    groups = summary.groupby(others, sort=False) if others else [((), summary)]
    for key, rows in groups:
        rows = rows.sort_values("rate_per_s")
        worse = rows[rows["spec_e2e_p99_s"] > rows["baseline_e2e_p99_s"]]
        name = ", ".join(f"{k} = {v}" for k, v in zip(others, key if isinstance(key, tuple) else (key,)))
        if worse.empty:
            verdict = f"never worse than the baseline, up to {rows['rate_per_s'].max():g} req/s (the highest rate swept)"
        elif worse.index[0] == rows.index[0]:
            verdict = f"already worse at the lowest rate swept ({rows['rate_per_s'].iloc[0]:g} req/s)"
        else:
            before = rows.loc[:worse.index[0]]["rate_per_s"].iloc[-2]
            verdict = f"at {worse['rate_per_s'].iloc[0]:g} req/s (still helps at {before:g})"
        lines.append(f"  {name + ': ' if name else ''}{verdict}")
    return "\n".join(lines)


def summary_table(summary: pd.DataFrame, swept: list[str], latency: bool = False) -> str:
    """For a load study (an open-loop arrival rate swept, or no speculation): latency per
    point (:func:`latency_table`). Otherwise speedup with candidate tokens down and the
    other swept key across, if the sweep has that shape, else one line per point with
    the swept keys first; ``speedup`` is full-batch decode throughput, spec / baseline."""
    if latency or "rate_per_s" in swept or summary["method"].iloc[0] == "none":
        return latency_table(summary, swept)
    others = [k for k in swept if k != "candidate_tokens"]
    if "candidate_tokens" in swept and len(others) == 1:
        pivot = summary.pivot_table(index="candidate_tokens", columns=others[0], values="speedup")
        return (f"speedup (spec / baseline decode throughput), {others[0]} across\n"
                + pivot.to_string(float_format=lambda v: f"{v:.2f}") + "\n" + SPEEDUP_NOTE)
    fixed = ("gpu", "model", "method", "candidate_tokens", "batch_size", "seq_len", "speedup",
             "speedup_p05", "speedup_p95", "acceptance_rate", "expected_acceptance_rate",
             "step_time_ratio", "baseline_tokens_per_s", "spec_tokens_per_s")
    cols = list(dict.fromkeys(["point_id"] + swept + [c for c in fixed if c in summary.columns]))
    shown = summary[cols] if len(summary) <= PRINTED_ROWS else summary[cols].head(PRINTED_ROWS)
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.3g}")
    if len(summary) > PRINTED_ROWS:
        text += f"\n... {len(summary) - PRINTED_ROWS:,} more points in summary.parquet"
    return text + "\n" + SPEEDUP_NOTE


SPEEDUP_NOTE = ("speedup: decode tokens per GPU second over full-batch iterations, spec / baseline: the "
                "steady-state gain of a fixed batch (the Medusa figure's); under load read latency instead "
                "(servesim report DIR --latency)")

PRINTED_ROWS = 60
"""Points printed on the terminal; the rest are in summary.parquet."""


# -- commands ---------------------------------------------------------------------------

def _run_streamed(scenario, output, args):
    """Run a scenario with every table streamed to part files in the staging folder of
    ``output`` (a :class:`~servesim.output.RunOutput`): steps and requests by the points
    themselves, summary and acceptance rows here, a few thousand at a time, so that
    memory stays bounded however long the sweep. Returns the part files per table and
    the number of points."""
    from servesim.results import FRAMES, FrameSink, acceptance_rows
    from servesim.runner import run_scenario

    if args.executor == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray: pip install 'servesim[ray]'") from None
    _announce_size(scenario)
    part_dir = output.part_dir
    sinks = {name: FrameSink(part_dir, name) for name in ("summary", "acceptance")}
    parts: dict[str, list[Path]] = {}

    def consume(result) -> None:
        sinks["summary"].add([result.summary], FRAMES["summary"])
        sinks["acceptance"].add(acceptance_rows(result), FRAMES["acceptance"])
        for name, files in result.parts.items():
            parts.setdefault(name, []).extend(files)

    run_scenario(scenario, args.jobs, Progress(), part_dir=part_dir, executor=args.executor,
                 address=args.address, consume=consume)
    for sink in sinks.values():
        sink.flush(FRAMES[sink.name])
    return {**{name: sink.paths for name, sink in sinks.items()}, **parts}, sinks["summary"].count


LARGE_SWEEP = 10_000
"""Sweeps with more points than this say how big they are before they start."""


def _announce_size(scenario) -> None:
    n = len(scenario.points()) * scenario.values["replications"]
    if n <= LARGE_SWEEP:
        return
    requests = n * 2 * scenario.values["num_requests"]
    print(f"{scenario.name}: {n:,} points x 2 arms, about {requests:,} simulated requests; at the "
          f"measured ~150,000 GPU stages/s per core this takes minutes to hours; the summary keeps "
          f"~{n * 3 // 1000:,} MB in memory and the tables are streamed to disk", file=sys.stderr)


def _write_bench_json(folder: Path, scenario) -> Path:
    """``summary.json`` (vLLM's result-file keys, per point and arm) from the staged summary."""
    from servesim.bench_result import write_bench_json

    summary = pd.read_parquet(folder / "summary.parquet")
    points = {p.point_id: p.values for p in scenario.points()}
    return write_bench_json(folder / "summary.json", summary, points, tuple(scenario.sweep))


def _write_run(out_dir: Path, scenario, args, extra=None):
    """Run ``scenario`` into ``out_dir``: stage, write every table, swap in. Returns the
    summary (read back from the written table), the number of points and the written
    paths. ``extra(summary) -> {name: frame}`` adds tables (the planner's)."""
    from servesim.output import RunOutput
    from servesim.results import write_tables

    output = RunOutput(out_dir)
    try:
        parts, points = _run_streamed(scenario, output, args)
        tables = {}
        if extra is not None:
            summary = pd.concat([pd.read_parquet(p) for p in parts["summary"]], ignore_index=True)
            tables.update(extra(summary))
        order = ["summary", "acceptance"] + [n for n in parts if n not in ("summary", "acceptance")]
        staged = write_tables(output.staging, tables, scenario.text, scenario.seed,
                              {name: parts[name] for name in order if name in parts})
        staged.append(_write_bench_json(output.staging, scenario))
        final = output.commit()
    except BaseException:
        output.abort()
        raise
    summary = pd.read_parquet(final / "summary.parquet")
    return summary, points, [final / p.name for p in staged]


def _arm_report(summary: pd.DataFrame) -> str:
    """Requests that did not finish, and saturated points, per arm: what a reader must
    know before trusting a latency figure."""
    lines = []
    for arm in ("baseline", "spec"):
        counts = {k: int(summary.get(f"{arm}_{k}", pd.Series([0])).sum())
                  for k in ("requests", "finished", "rejected", "unfinished", "not_arrived")}
        saturated = int(summary.get(f"{arm}_saturated", pd.Series([False])).sum())
        line = (f"{arm}: {counts['finished']:,} of {counts['requests']:,} requests finished")
        extras = [f"{counts[k]:,} {k.replace('_', ' ')}" for k in ("rejected", "unfinished", "not_arrived") if counts[k]]
        if saturated:
            extras.append(f"{saturated} of {len(summary)} points saturated (the queue was still growing)")
        lines.append(line + ("; " + ", ".join(extras) if extras else ""))
    capped = int(summary.get("length_capped_requests", pd.Series([0])).sum())
    if capped:
        lines.append(f"{capped:,} requests per arm (summed over points) had drawn lengths over the "
                     "model's maximum context: cut to it (summary: length_capped_requests)")
    return "\n".join(lines)


def cmd_run(args) -> int:
    scenario = load_scenario_arg(args.scenario, args.set)
    out_dir = Path(args.out or scenario.values["dir"] or Path("outputs") / scenario.name)
    summary, points, written = _write_run(out_dir, scenario, args)
    print(f"{scenario.name}: {points} points, seed {scenario.seed}")
    print(summary_table(summary, list(scenario.sweep)))
    print(_arm_report(summary))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_plan(args) -> int:
    from servesim.planner import KNOBS, lower_is_better, plan

    finished = Path(args.scenario) / "summary.parquet"
    if Path(args.scenario).is_dir():
        return _plan_finished_run(finished, args)
    scenario = load_scenario_arg(args.scenario, args.set)
    swept = list(scenario.sweep)
    if not any(k in KNOBS for k in swept):
        raise UsageError(f"{scenario.source}: [sweep] must vary at least one of "
                         f"{', '.join(KNOBS)} for the planner to choose among")
    out_dir = Path(args.out or scenario.values["dir"] or Path("outputs") / scenario.name)

    def plan_table(summary):
        _check_objective(summary, args.objective)
        return {"plan": plan(summary, swept, args.objective)}

    summary, points, written = _write_run(out_dir, scenario, args, plan_table)
    direction = "lowest" if lower_is_better(args.objective) else "highest"
    print(f"{scenario.name}: speculation setting with the {direction} {args.objective} per point "
          f"(of {points} simulated)")
    print(_plan_text(pd.read_parquet(out_dir / "plan.parquet")))
    print(_arm_report(summary))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _check_objective(summary: pd.DataFrame, objective: str) -> None:
    if objective not in summary.columns:
        raise UsageError(f"--objective: unknown column {objective!r}; summary columns: " + ", ".join(summary.columns))


def _plan_text(frame: pd.DataFrame) -> str:
    text = frame.to_string(index=False, float_format=lambda v: f"{v:.3g}")
    if "ties_with_best" in frame.columns and frame["ties_with_best"].isna().all():
        text += ("\n(one replication: no confidence intervals, so no ties flagged; set replications >= 2 "
                 "to see which settings are indistinguishable from the best)")
    return text


def _plan_finished_run(path: Path, args) -> int:
    """``servesim plan DIR``: the plan of a finished run, from its summary (no simulation);
    written to DIR/plan.parquet."""
    from servesim.planner import KNOBS, lower_is_better, plan
    from servesim.results import read_metadata, write_tables

    if not path.is_file():
        raise UsageError(f"{path}: no such file; `servesim plan` takes a scenario or a finished run's folder")
    summary = _read_parquet(path, ("point_id", "speedup"))
    meta = read_metadata(path)
    try:
        scenario = load_scenario(str(path), text=meta["servesim.scenario"])
    except (KeyError, ScenarioError):
        raise UsageError(f"{path}: no valid scenario in its metadata; re-run it with `servesim run`") from None
    swept = list(scenario.sweep)
    if not any(k in KNOBS for k in swept):
        raise UsageError(f"{path}: the run's sweep varies none of {', '.join(KNOBS)}: nothing to choose among")
    _check_objective(summary, args.objective)
    frame = plan(summary, swept, args.objective)
    write_tables(path.parent, {"plan": frame}, meta["servesim.scenario"], int(meta.get("servesim.seed", 0)))
    direction = "lowest" if lower_is_better(args.objective) else "highest"
    print(f"{scenario.name}: speculation setting with the {direction} {args.objective} per point "
          f"(of {len(summary)} in {path.parent}, not re-simulated)")
    print(_plan_text(frame))
    print(f"wrote {path.parent / 'plan.parquet'}")
    return 0


def cmd_replay(args) -> int:
    """Re-run a measured `vllm bench serve` result in servesim and compare, metric by metric."""
    import json

    from servesim.replay import catalog_model, comparison, read_result, replay_scenario_text

    data = read_result(args.result)
    gpu = args.gpu or next((a.split("=", 1)[1] for a in args.set if a.split("=", 1)[0] in ("gpu", "hardware.gpu")), None)
    if not gpu:
        raise UsageError("--gpu: required: the GPU the benchmark ran on (servesim list), e.g. --gpu h100-sxm")
    model = args.model or catalog_model(data.get("model_id"))
    if not model:
        raise UsageError(f"--model: {args.result}'s model_id {data.get('model_id')!r} is not a catalog model; "
                         "give --model (a catalog name or a config.json path)")
    text = replay_scenario_text(args.result, data, gpu, model)
    scenario = load_scenario(f"<replay of {args.result}>", args.set, text=text)
    out_dir = Path(args.out or Path("outputs") / scenario.name)
    args.jobs, args.executor, args.address = 1, "local", None
    summary, _, written = _write_run(out_dir, scenario, args)
    records = json.loads((out_dir / "summary.json").read_text())
    arm = "spec" if summary["method"].iloc[0] != "none" else "baseline"
    simulated = next(r for r in records if r["arm"] == arm)
    table = comparison(data, simulated)
    point = scenario.points()[0]
    print(f"replay of {args.result}: {simulated['completed']:,} requests, {point['model']} on "
          f"{point['gpu']} (x{point['tensor_parallel_size']}), arrival {point['arrival']}, "
          f"{point['scheduler']} scheduler, {point['kv_cache']} KV, max_num_seqs {point['batch_size']}")
    print(table.to_string(index=False, float_format=lambda v: f"{v:,.4g}"))
    if len(table):
        print(f"median |error| {table['error_pct'].abs().median():.1f}%, largest {table['error_pct'].abs().max():.1f}% "
              f"({table.loc[table['error_pct'].abs().idxmax(), 'metric']})")
    table.to_csv(out_dir / "replay_comparison.csv", index=False)
    print("wrote " + ", ".join(str(p) for p in written) + f", {out_dir / 'replay_comparison.csv'}")
    return 0


def cmd_trace(args) -> int:
    """A point's GPU steps and request lifecycles as a Chrome/Perfetto trace (JSON)."""
    import json

    from servesim.chrome_trace import trace_events

    directory = Path(args.dir)
    frames = {}
    for name in ("steps", "requests"):
        path = directory / f"{name}.parquet"
        if not path.is_file():
            raise UsageError(f"{path}: no such file; the trace needs the run's steps and requests tables "
                             "(output.write_steps and output.write_requests)")
        try:
            frame = pd.read_parquet(path, filters=[("point_id", "==", args.point),
                                                   ("replication", "==", args.replication)])
        except Exception as e:
            raise UsageError(f"{path}: cannot read as servesim's {name} table: {e}") from None
        frames[name] = frame
    if frames["steps"].empty and frames["requests"].empty:
        points = sorted(pd.read_parquet(directory / "requests.parquet", columns=["point_id"])["point_id"].unique())
        raise UsageError(f"--point {args.point}: no such point (replication {args.replication}) in {directory}; "
                         f"points: {points[0]}..{points[-1]}" if points else f"{directory}: the tables are empty")
    out = Path(args.out or directory / f"trace_point{args.point}.json")
    events = trace_events(frames["steps"], frames["requests"])
    try:
        out.write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{out}: cannot write: {e.strerror or e}") from None
    print(f"wrote {out}: {len(frames['steps']):,} GPU stages and {len(frames['requests']):,} request rows (both arms) of point "
          f"{args.point}; open it in https://ui.perfetto.dev or chrome://tracing")
    return 0


def cmd_schema(args) -> int:
    """The scenario reference, from the schema itself."""
    from servesim.reference import reference_json, reference_markdown

    sys.stdout.write(reference_json() if args.format == "json" else reference_markdown())
    return 0


def cmd_scenarios(args) -> int:
    """The bundled scenarios, one line each."""
    names = bundled_scenarios()
    width = max(map(len, names))
    print("bundled scenarios (servesim run NAME; servesim init NAME [DIR] copies one to edit):")
    for name, description in names.items():
        print(f"  {name:<{width}}  {description}")
    return 0


def cmd_init(args) -> int:
    """Copy a bundled scenario to DIR/NAME.toml (never over an existing file)."""
    name = args.name.removesuffix(".toml")
    if name not in bundled_scenarios():
        raise UsageError(f"{args.name}: no bundled scenario of that name; bundled: "
                         + ", ".join(bundled_scenarios()))
    folder = Path(args.dir)
    target = folder / f"{name}.toml"
    if target.exists():
        raise UsageError(f"{target}: already exists; remove it or give another folder")
    _, text = bundled_scenario(f"{name}.toml")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as e:
        raise UsageError(f"{target}: cannot write: {e.strerror or e}") from None
    print(f"wrote {target}; edit it, then: servesim run {target}")
    return 0


def validation_report(summary: pd.DataFrame) -> tuple[str, bool]:
    """Simulated vs reference seed figure, errors, and the issue's targets."""
    from servesim.catalog import medusa_figure

    ref = pd.DataFrame(medusa_figure(), columns=["candidate_tokens", "seq_len", "reference"])
    both = summary[["candidate_tokens", "seq_len", "speedup"]].merge(ref, on=["candidate_tokens", "seq_len"])
    both["error"] = both["speedup"] - both["reference"]
    sim = both.pivot(index="candidate_tokens", columns="seq_len", values="speedup")
    refp = both.pivot(index="candidate_tokens", columns="seq_len", values="reference")
    cells = sim.copy().astype(object)
    for n in sim.index:
        for s in sim.columns:
            cells.loc[n, s] = f"{sim.loc[n, s]:.2f} ({refp.loc[n, s]:.1f})"
    scored = both[both["candidate_tokens"] >= 16]
    abs_err = scored["error"].abs()
    checks = []
    checks.append(("mean absolute error <= 0.10 (N >= 16)", abs_err.mean() <= 0.10, f"{abs_err.mean():.3f}"))
    over = int((abs_err > 0.25).sum())
    checks.append(("at most 3 of 49 points off by > 0.25", over <= 3, f"{over}"))
    peaks = {s: int(sim[s].drop(1, errors="ignore").idxmax()) for s in sim.columns if s <= 4096}
    checks.append(("peak at 16 or 32 candidates for seq_len <= 4096",
                   all(p in (16, 32) for p in peaks.values()), str(peaks)))
    drops = {s: round(float(sim.loc[64, s] - sim.loc[80, s]), 2) for s in sim.columns if s <= 2048}
    checks.append(("drop >= 0.3 from 64 to 80 candidates for seq_len <= 2048",
                   all(d >= 0.3 for d in drops.values()), str(drops)))
    rises = [(n, float(sim.loc[n].diff().max())) for n in sim.index]
    worst = max(r for _, r in rises)
    checks.append(("speedup never rises with seq_len by > 0.02", worst <= 0.02, f"largest rise {worst:+.3f}"))
    ones = sim.loc[1] if 1 in sim.index else pd.Series(dtype=float)
    checks.append(("speedup exactly 1.0 at 1 candidate token", bool((ones == 1.0).all()) and len(ones) > 0,
                   ", ".join(f"{v:.6f}" for v in ones)))
    lines = ["simulated speedup (reference in parentheses), candidate tokens down, seq_len across",
             cells.to_string(), "",
             f"over the {len(scored)} points with >= 16 candidates: mean absolute error "
             f"{abs_err.mean():.3f}, max {abs_err.max():.3f}", ""]
    for name, ok, detail in checks:
        lines.append(f"  [{'ok' if ok else 'MISSED'}] {name}: {detail}")
    passed = all(ok for _, ok, _ in checks)
    lines.append("all targets met" if passed else "some targets missed")
    return "\n".join(lines), passed


def cmd_validate(args) -> int:
    from servesim.runner import run_scenario

    if args.scenario:
        scenario = load_scenario(args.scenario, args.set)
    else:
        source, text = bundled_scenario()
        scenario = load_scenario(source, args.set, text=text)
    results = run_scenario(scenario)
    report, passed = validation_report(pd.DataFrame([r.summary for r in results]))
    print(report)
    return 0 if passed else 1


def cmd_tree(args) -> int:
    from servesim.speculation.trees import (BUNDLED_ACCURACY, TreeAcceptance, bundled_tree_names,
                                greedy_tree, head_rank_probabilities, published_tree)

    if args.heads not in BUNDLED_ACCURACY and not Path(args.heads).is_file():
        raise UsageError(f"--heads: {args.heads!r} is neither a bundled table "
                         f"({', '.join(BUNDLED_ACCURACY)}) nor a CSV file")
    try:
        probs = head_rank_probabilities(args.heads)
    except (ValueError, KeyError) as e:
        raise UsageError(f"--heads {args.heads}: {e}") from None
    rows = []
    if args.tree:
        if args.tree not in bundled_tree_names():
            raise UsageError(f"--tree: unknown tree {args.tree!r}; allowed: {', '.join(bundled_tree_names())}")
        tree = published_tree(args.tree)
        sizes = args.candidate_tokens or [len(tree) + 1]
        for n in sizes:
            model = TreeAcceptance(tuple(tree[: n - 1]), probs)
            rows.append({"tree": args.tree, "candidate_tokens": n, "depth": model.depth,
                         "expected_tokens_per_step": model.mean})
    else:
        for n in args.candidate_tokens or [4, 8, 16, 32, 64, 128]:
            model = TreeAcceptance(tuple(greedy_tree(probs, n)), probs)
            rows.append({"tree": "greedy", "candidate_tokens": n, "depth": model.depth,
                         "expected_tokens_per_step": model.mean})
    print(f"expected tokens per verify step with {args.heads} head accuracies "
          "(closed form: 1 + sum of path probabilities)")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_list(args) -> int:
    from servesim.hardware.calibrate import left_out_as_unrepresentative

    print("GPUs (kernel profile: under serving.framework = vllm; provenance: where it comes from)")
    rows = []
    for name in gpu_names():
        g = get_gpu(name)
        rows.append({"name": name, "bandwidth_GB/s": g.hbm_bandwidth_bytes_per_s / 1e9,
                     "fp16_TFLOP/s": g.peak_fp16_flops_per_s / 1e12,
                     "fp8_TFLOP/s": g.peak_fp8_flops_per_s / 1e12 if g.peak_fp8_flops_per_s else "-",
                     "memory_GB": g.memory_bytes / 1e9,
                     "ridge_FLOP/B": g.ridge_flops_per_byte, "kernel_profile": g.profile_name,
                     "description": g.description})
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:g}"))
    for name in gpu_names():
        print(f"  {name}: {get_gpu(name).provenance}")
    print("\nKernel profiles (hardware.kernel_profile; a calibrated profile's fit: median |error| in-sample / "
          "out-of-sample, %)")
    rows = []
    for name in profile_names():
        _, table = get_profile(name)
        fit = table.get("fit", {})
        row = {"name": name, "provenance": fit.get("provenance", "")}
        for op in ("gemm", "decode_attention", "prefill_attention", "elementwise", "allreduce", "fp8_gemm",
                   "decode_attention_fp8_kv", "prefill_attention_fp8_kv"):
            ins, out = fit.get("in_sample", {}).get(op), fit.get("out_of_sample", {}).get(op)
            row[op] = (f"{ins['median_abs_pct']:.1f} / {out['median_abs_pct']:.1f}" if ins and out
                       else "left out" if left_out_as_unrepresentative(fit, op) else "-")
        rows.append(row)
    print(pd.DataFrame(rows).to_string(index=False))
    print("\nServing frameworks (serving.framework)")
    rows = [{"name": f.name, "step_overhead_ms": f.step_overhead_s * 1e3,
             "per_seq_us": f.step_overhead_per_seq_s * 1e6, "kernels": f.kernels, "scheduler": f.scheduler,
             "max_num_batched_tokens": ", ".join(f"{k} {v}" for k, v in f.max_num_batched_tokens.items()),
             "source": f.source + (f" Per sequence: {f.step_overhead_per_seq_source}"
                                   if f.step_overhead_per_seq_source else "")
                       + (f" Scheduler: {f.scheduler_source}" if f.scheduler_source else "")
                       + (f" Token budget: {f.max_num_batched_tokens_source}"
                          if f.max_num_batched_tokens_source else "")}
            for f in map(get_framework, framework_names())]
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:g}"))
    print("\nModels")
    rows = []
    for name in model_names():
        m = get_model(name)
        rows.append({"name": name, "params_B": round(m.params / 1e9, 3), "layers": m.layers,
                     "hidden": m.hidden, "heads": m.heads, "kv_heads": m.kv_heads,
                     "head_dim": m.head_dim, "kv_KiB/token": m.kv_bytes_per_token() / 1024,
                     "max_context": m.max_context_tokens or "-", "description": m.description})
    frame = pd.DataFrame(rows)
    width = frame["description"].str.len().max()
    print(frame.to_string(index=False, float_format=lambda v: f"{v:g}",
                          formatters={"description": lambda d: d.ljust(width)}))
    print("(a model not listed: `model.model = \"path/to/config.json\"` or a [model.define.NAME] table)")
    return 0


def cmd_cost(args) -> int:
    try:
        framework = get_framework(args.framework)
    except KeyError:
        raise UsageError(f"--framework: unknown framework {args.framework!r}; "
                         f"allowed: {', '.join(framework_names())}") from None
    try:
        gpu = get_gpu(args.gpu, framework.kernels, args.kernel_profile or "")
    except KeyError as e:
        if e.args[0] == args.gpu:
            raise UsageError(f"--gpu: unknown GPU {args.gpu!r}; allowed: {', '.join(gpu_names())}") from None
        raise UsageError(f"--kernel-profile: unknown profile {args.kernel_profile!r}; allowed: "
                         f"{', '.join(profile_names())} or the path of a profile TOML file") from None
    except ProfileError as e:
        raise UsageError(f"--kernel-profile: {e}") from None
    try:
        model = get_model(args.model)
    except KeyError:
        raise UsageError(f"--model: unknown model {args.model!r}; allowed: {', '.join(model_names())}") from None
    if min(args.batch) < 1 or min(args.tokens_per_seq) < 1:
        raise UsageError("--batch and --tokens-per-seq must be >= 1")
    try:
        cm = CostModel(gpu, model, step_overhead_s=framework.step_overhead_s,
                       tensor_parallel_size=args.tensor_parallel_size,
                       step_overhead_per_seq_s=framework.step_overhead_per_seq_s)
    except ValueError as e:
        raise UsageError(f"--tensor-parallel-size: {e}") from None
    try:
        if args.fp8_activation_quantization != "fused" and args.quantization != "fp8":
            raise UsageError("--fp8-activation-quantization standalone applies to FP8 linear layers only; "
                             "add --quantization fp8")
        if args.quantization != "none" or args.kv_cache_dtype != "auto":
            cm = CostModel(gpu, model, step_overhead_s=framework.step_overhead_s,
                           tensor_parallel_size=args.tensor_parallel_size,
                           step_overhead_per_seq_s=framework.step_overhead_per_seq_s, quantization=args.quantization,
                           kv_cache_dtype=args.kv_cache_dtype,
                           fp8_activation_quantization=args.fp8_activation_quantization)
    except ValueError as e:
        raise UsageError(f"--quantization: {e}") from None
    rows = []
    for batch in args.batch:
        for n in args.tokens_per_seq:
            for ctx in args.context:
                stage = args.stage or ("decode" if n == 1 else "prefill" if ctx == 0 else "verify")
                step = cm.step_cost(batch, n, batch * ctx, stage)
                for op in step.ops:
                    rows.append({"batch": batch, "tokens_per_seq": n, "context": ctx, "stage": stage,
                                 "op": op.name, "time_s": op.time_s, "flops": op.flops,
                                 "hbm_bytes": op.hbm_bytes, "bound": op.bound})
                rows.append({"batch": batch, "tokens_per_seq": n, "context": ctx, "stage": stage,
                             "op": "total", "time_s": step.time_s,
                             "flops": sum(o.flops for o in step.ops),
                             "hbm_bytes": sum(o.hbm_bytes for o in step.ops), "bound": ""})
    frame = pd.DataFrame(rows)
    if args.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    else:
        header = (f"{gpu.description}"
                  + (f" x {cm.tensor_parallel_size} (tensor parallel)" if cm.tensor_parallel_size > 1 else "")
                  + f", {model.description}; kernel profile {gpu.profile_name} "
                  f"({gpu.provenance or 'user file'}); framework {framework.name} "
                  f"({framework.step_overhead_s * 1e3:g} ms per step"
                  + (f" + {framework.step_overhead_per_seq_s * 1e6:g} us per sequence"
                     if framework.step_overhead_per_seq_s else "") + ")")
        if args.quantization == "fp8":
            header += ("; FP8 linear layers (" + ("the profile's FP8 GEMM fit" if gpu.profile.fp8_gemm else
                       "no FP8 GEMMs measured: the 16-bit GEMM fit at the FP8 peak, an estimate")
                       + (", each quantizing its own input" if args.fp8_activation_quantization == "standalone"
                          else "") + ")")
        if args.kv_cache_dtype == "fp8":
            header += ("; FP8 KV cache (" + ("the profile's FP8-KV attention fits" if gpu.profile.fp8_kv_decode else
                       "no FP8-KV attention measured: the 16-bit fits over half the bytes, an estimate") + ")")
        print(header)
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_calibrate(args) -> int:
    from servesim.hardware.calibrate import CalibrationError, calibrate, write_profile
    from servesim.hardware.kernel_table import KernelTableError, read_kernel_table

    try:
        gpu = get_gpu(args.gpu, kernel_profile="medusa-paper")  # only its datasheet facts are used
    except KeyError:
        raise UsageError(f"--gpu: unknown GPU {args.gpu!r}; allowed: {', '.join(gpu_names())}") from None
    framework = (args.framework or "vllm").lower()
    try:
        if args.aiconfigurator:
            from servesim.hardware.aiconfigurator import read_database
            measured = args.measured_gpu or gpu.measured_as
            if not measured:
                raise UsageError(f"--measured-gpu: {args.gpu} has no measured_as name in the catalog; "
                                 "give the database folder name (e.g. h100_sxm)")
            table = read_database(measured, framework)
            source = "aiconfigurator-core database"
        else:
            from servesim.catalog import data_path
            path = args.table or data_path("calibration/kernels_measured.csv.gz")
            table = read_kernel_table(path)
            source = str(args.table or "the bundled measured tables (servesim/data/calibration/)")
            frameworks = sorted(set(table["framework"]))
            if args.framework is None and len(frameworks) == 1:
                framework = frameworks[0]
            gpus = sorted(set(table["gpu"]))
            measured = args.measured_gpu or (gpu.measured_as if gpu.measured_as in gpus else
                                             (gpus[0] if len(gpus) == 1 else ""))
            if not measured:
                raise UsageError(f"--measured-gpu: the table has GPUs {', '.join(gpus)}; say which is {args.gpu}")
        content = calibrate(table, gpu, framework, measured, args.framework_version)
    except (KernelTableError, CalibrationError, FileNotFoundError) as e:
        raise UsageError(str(e)) from None
    fit = content["fit"]
    print(f"{args.gpu} ({measured}), {framework} kernels {', '.join(fit['framework_versions'])}, from {source}")
    for section in ("in_sample", "out_of_sample"):
        frame = pd.DataFrame(fit[section]).T
        frame.index.name = "op class"
        print(f"\n{section.replace('_', '-')} |error| %"
              + (" (whole shapes held out of the fit)" if section == "out_of_sample" else ""))
        print(frame.to_string(float_format=lambda v: f"{v:.1f}"))
    by_size = fit.get("in_sample_by_tensor_parallel_size", {})
    if by_size:
        cells = {size.replace("tp", "TP "): {op: f"{stats['median_abs_pct']:.1f} / {stats['p90_abs_pct']:.1f}"
                                             for op, stats in ops.items()} for size, ops in by_size.items()}
        frame = pd.DataFrame(cells).T.fillna("-")
        frame.index.name = "timed for"
        print("\nin-sample |error| % by tensor-parallel size (median / p90; the shapes one GPU runs at each)")
        print(frame.to_string())
    if fit["qkv_scaling"]:
        qkv = pd.DataFrame(fit["qkv_scaling"])
        print(f"\nqkv GEMM ({qkv['n'].iloc[0]} x {qkv['k'].iloc[0]}) t(M)/t(1), measured vs predicted "
              "(as measured: a replayed kernel's L2 hits; serving: weights from HBM)")
        print(qkv.drop(columns=["n", "k"]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    for note in fit["notes"]:
        print(f"note: {note}")
    out = Path(args.out or f"{args.gpu}-{framework}.toml")
    header = (f"Kernel profile of {gpu.description} under {framework} kernels, written by servesim calibrate.\n"
              f"Use it with hardware.kernel_profile = \"{out}\" or --kernel-profile {out}.")
    try:
        write_profile(content, out, header)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write: {e.strerror}") from None
    print(f"\nwrote {out}")
    return 0


def _allreduce_gpus(text: str | None) -> tuple[int, ...] | None:
    """--allreduce-gpus: None (the default groups), () for none, or the group sizes."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        gpus = tuple(int(part) for part in text.split(","))
    except ValueError:
        gpus = ()
    if not gpus or min(gpus) < 2:
        raise UsageError(f"--allreduce-gpus: {text!r} is not a list of group sizes; allowed: integers >= 2 "
                         "separated by commas (e.g. 2,4,8), or none")
    return gpus


def _tensor_parallel_sizes(text: str | None, model) -> tuple[int, ...]:
    """``--tensor-parallel-sizes``: sizes that split ``model`` (None: the default ones)."""
    if text is None:
        return model.tensor_parallel_sizes()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    allowed = model.tensor_parallel_sizes(range(1, model.heads + 1))
    if not sizes or any(tp not in allowed for tp in sizes):
        raise UsageError(f"--tensor-parallel-sizes: {text!r}; allowed: sizes that split {model.name}'s "
                         f"{model.heads} heads and MLP width {model.intermediate}, separated by commas "
                         f"({', '.join(map(str, allowed))})")
    return sizes


def cmd_profile(args) -> int:
    from servesim.hardware.kernel_table import write_kernel_table
    from servesim.hardware.profiler import FULL, QUICK, ProfileUnavailable, profile_model

    try:
        model = get_model(args.model)
    except KeyError:
        raise UsageError(f"--model: unknown model {args.model!r}; allowed: {', '.join(model_names())}") from None
    if not 1 <= args.repeat <= 1000:
        raise UsageError(f"--repeat must be in [1, 1000], got {args.repeat}")
    out = Path(args.out)
    gpus = _allreduce_gpus(args.allreduce_gpus)
    sizes = _tensor_parallel_sizes(args.tensor_parallel_sizes, model)
    try:
        table = profile_model(model, args.backend, args.device, FULL if args.full else QUICK,
                              repeat=args.repeat, progress=lambda what: print(f"timed {what}", file=sys.stderr),
                              allreduce_gpus=gpus, tensor_parallel_sizes=sizes, fp8=not args.no_fp8)
    except ProfileUnavailable as e:
        raise UsageError(str(e)) from None
    try:
        write_kernel_table(table, out)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write: {e.strerror}") from None
    print(f"wrote {out}: {len(table)} kernels timed on {table['gpu'].iloc[0]} ({args.backend}); "
          f"fit a profile with: servesim calibrate --gpu GPU --table {out}")
    return 0


def _read_parquet(path: Path, required: tuple[str, ...] = ()) -> pd.DataFrame:
    """A table of a run folder, or a UsageError naming the file and what is wrong."""
    try:
        frame = pd.read_parquet(path)
    except Exception as e:  # garbage, truncated, not Parquet: one clear message
        raise UsageError(f"{path}: not a readable Parquet table ({type(e).__name__}: {str(e)[:200]}); "
                         "run `servesim run` again") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise UsageError(f"{path}: missing column(s) {', '.join(missing)}; not a servesim table of this version")
    return frame


def _measured_seed_summary(summary: pd.DataFrame):
    """The seed scenario under the GPU's measured kernels (kernels only, no framework
    overhead), if ``summary`` is the seed sweep under the paper's profile; else None."""
    from servesim.runner import run_scenario

    if not {"candidate_tokens", "seq_len", "gpu"} <= set(summary.columns):
        return None, ""
    name, text = bundled_scenario()
    gpu = str(summary["gpu"].iloc[0])
    scenario = load_scenario(name, [f"gpu={gpu}", "kernel_profile=", "framework=none",
                                    "write_steps=false", "write_requests=false"], text=text)
    results = run_scenario(scenario, jobs=1)
    from servesim.hardware import default_profile_name
    return pd.DataFrame([r.summary for r in results]), f"measured kernels ({default_profile_name(gpu)})"


def cmd_report(args) -> int:
    """The terminal summary of a finished run, from its folder (what `run` printed)."""
    from servesim.results import read_metadata

    directory = Path(args.dir)
    path = directory / "summary.parquet"
    if not path.is_file():
        raise UsageError(f"{path}: no such file; run `servesim run` first")
    summary = _read_parquet(path, ("point_id", "method", "speedup"))
    try:
        meta = read_metadata(path)
        scenario = load_scenario(str(path), text=meta["servesim.scenario"])
        swept = list(scenario.sweep)
        name = scenario.name
    except (KeyError, ScenarioError):
        swept, name = [], directory.name  # a table without (valid) scenario metadata
    print(f"{name}: {len(summary)} points ({path})")
    print(summary_table(summary, swept, latency=args.latency))
    print(_arm_report(summary))
    return 0


def cmd_plot(args) -> int:
    directory = Path(args.dir)
    summary_path = directory / "summary.parquet"
    if not summary_path.is_file():
        raise UsageError(f"{summary_path}: no such file; run `servesim run` first")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plotting needs matplotlib: pip install 'servesim[plot]'") from None
    from servesim import plots

    summary = _read_parquet(summary_path, ("speedup", "batch_size", "gpu", "model", "method"))
    if summary.empty:
        raise UsageError(f"{summary_path}: no rows")
    varies = {c for c in ("candidate_tokens", "rate_per_s") if c in summary.columns and summary[c].nunique() > 1}
    if not varies:
        raise UsageError(f"{summary_path}: nothing to plot; the figures need a sweep over "
                         "candidate_tokens and/or rate_per_s")
    written, skipped = [], []
    try:
        if "rate_per_s" in varies:
            written.append(plots.latency_vs_load(summary, directory / "latency_vs_load.png"))
            if any(k in summary.columns and summary[k].nunique() > 1 for k in plots.SETTING_KEYS):
                written.append(plots.settings_vs_load(summary, directory / "settings_vs_load.png"))
            if "candidate_tokens" in varies:
                written.append(plots.width_vs_load(summary, directory / "width_vs_load.png"))
            if (directory / "requests.parquet").is_file():
                requests = _read_parquet(directory / "requests.parquet",
                                         ("arm", "point_id", "arrival_s", "first_token_s", "finish_s", "status",
                                          "output_len"))
                written.append(plots.latency_cdf(summary, requests, directory / "latency_cdf.png"))
            else:
                skipped.append("latency_cdf.png (no requests.parquet: output.write_requests = false)")
            if (directory / "steps.parquet").is_file():
                steps = _read_parquet(directory / "steps.parquet", ("arm", "point_id", "start_s", "kv_used_tokens"))
                written.append(plots.kv_usage(summary, steps, directory / "kv_usage.png"))
            else:
                skipped.append("kv_usage.png (no steps.parquet: output.write_steps = false)")
        if "candidate_tokens" in varies:
            reference = measured = None
            label = ""
            if args.reference:
                from servesim.catalog import medusa_figure
                reference = pd.DataFrame(medusa_figure(), columns=["candidate_tokens", "seq_len", "speedup"])
                measured, label = _measured_seed_summary(summary)
            written.append(plots.speedup_vs_candidates(summary, directory / "speedup_vs_candidates.png",
                                                       reference, measured, label))
            if (directory / "steps.parquet").is_file():
                steps = _read_parquet(directory / "steps.parquet", ("arm", "stage", "duration_s", "point_id"))
                written.append(plots.verify_breakdown(summary, steps, directory / "verify_breakdown.png"))
            else:
                skipped.append("verify_breakdown.png (no steps.parquet: output.write_steps = false)")
            if (directory / "requests.parquet").is_file():
                requests = _read_parquet(directory / "requests.parquet",
                                         ("arm", "point_id", "request_id", "first_token_s", "finish_s", "status"))
                written.append(plots.request_speedup(summary, requests, directory / "request_speedup.png"))
            else:
                skipped.append("request_speedup.png (no requests.parquet: output.write_requests = false)")
    except OSError as e:
        raise UsageError(f"{directory}: cannot write a figure there: {e.strerror or e}") from None
    for note in skipped:
        print(f"skipped {note}")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def _executor_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--executor", choices=("local", "ray"), default="local",
                        help="where sweep points run: local processes (default) or Ray tasks "
                             "(pip install 'servesim[ray]')")
    parser.add_argument("--address", help="Ray cluster address (default: start a local Ray instance)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="servesim", description="Discrete-event simulator of LLM "
                                "inference serving with speculative decoding.")
    p.add_argument("--version", action="version", version=f"servesim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a scenario and write Parquet tables")
    run.add_argument("scenario", help="scenario TOML file, or the name of a bundled one (servesim scenarios)")
    run.add_argument("--out", help="output folder (default: [output] dir, else outputs/<name>/)")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a scenario key (TOML value), e.g. --set seq_len=1024 "
                          "or --set 'sweep.candidate_tokens=[1,32]'; repeatable")
    run.add_argument("--jobs", type=_jobs, default="auto",
                     help="local worker processes for sweep points (default: all cores); "
                          "results are identical to a serial run")
    _executor_options(run)
    run.set_defaults(func=cmd_run)

    pln = sub.add_parser("plan", help="pick the best speculation setting per point (of a scenario, or of a finished run's folder)")
    pln.add_argument("scenario", help="scenario TOML file (or bundled name) whose [sweep] varies a speculation "
                                      "setting, or the folder of a finished run (planned from its summary, "
                                      "not re-simulated)")
    pln.add_argument("--out", help="output folder (default: [output] dir, else outputs/<name>/)")
    pln.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    pln.add_argument("--objective", default="speedup",
                     help="summary column to optimise: speedup (default), or e.g. spec_e2e_p99_s "
                          "(columns ending in _s are minimised, others maximised)")
    pln.add_argument("--jobs", type=_jobs, default="auto", help="local worker processes (default: all cores)")
    _executor_options(pln)
    pln.set_defaults(func=cmd_plan)

    val = sub.add_parser("validate", help="run the seed scenario and compare with the Medusa figure")
    val.add_argument("--scenario", help="scenario to compare instead of the bundled seed scenario")
    val.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    val.set_defaults(func=cmd_validate)

    plot = sub.add_parser("plot", help="figures from a run's folder (needs servesim[plot])")
    plot.add_argument("dir", help="folder with summary.parquet")
    plot.add_argument("--reference", action="store_true",
                      help="overlay the Medusa reference figure (dotted)")
    plot.set_defaults(func=cmd_plot)

    tree = sub.add_parser("tree", help="expected acceptance of Medusa trees from head accuracies")
    tree.add_argument("--heads", default="vicuna-7b", help="bundled head accuracies or a CSV")
    tree.add_argument("--tree", help="a bundled tree (e.g. mc_sim_7b_63); default: greedy trees")
    tree.add_argument("--candidate-tokens", type=_int_list, help="tree sizes, root included (list allowed)")
    tree.set_defaults(func=cmd_tree)

    rpl = sub.add_parser("replay", help="re-run a measured `vllm bench serve` result file and compare, metric by metric")
    rpl.add_argument("result", help="result JSON of `vllm bench serve --save-result --save-detailed`")
    rpl.add_argument("--gpu", help="the GPU it ran on (servesim list); required")
    rpl.add_argument("--model", help="the model (catalog name or config.json); default: the result's model_id "
                                     "if it names a catalog model")
    rpl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="server and other settings, e.g. --set max_num_batched_tokens=2048 "
                          "--set tensor_parallel_size=2 (defaults: vLLM's scheduler, paged KV, max_num_seqs 256)")
    rpl.add_argument("--out", help="output folder (default outputs/replay_<file name>/)")
    rpl.set_defaults(func=cmd_replay)

    trc = sub.add_parser("trace", help="write a point's GPU steps and request lifecycles as a Chrome/Perfetto trace")
    trc.add_argument("dir", help="a finished run's folder (with steps.parquet and requests.parquet)")
    trc.add_argument("--point", type=int, default=0, help="point_id (default 0)")
    trc.add_argument("--replication", type=int, default=0, help="replication (default 0)")
    trc.add_argument("--out", help="JSON file to write (default DIR/trace_point<N>.json)")
    trc.set_defaults(func=cmd_trace)

    sch = sub.add_parser("schema", help="print the scenario reference (every key: type, default, meaning) from the schema")
    sch.add_argument("--format", choices=("markdown", "json"), default="markdown")
    sch.set_defaults(func=cmd_schema)

    scn = sub.add_parser("scenarios", help="list the bundled scenarios (run one with servesim run NAME)")
    scn.set_defaults(func=cmd_scenarios)

    ini = sub.add_parser("init", help="copy a bundled scenario to a folder, to edit")
    ini.add_argument("name", help="bundled scenario name (servesim scenarios)")
    ini.add_argument("dir", nargs="?", default=".", help="folder to write NAME.toml in (default: here)")
    ini.set_defaults(func=cmd_init)

    rep = sub.add_parser("report", help="print a finished run's summary table again (from its folder)")
    rep.add_argument("dir", help="folder with summary.parquet")
    rep.add_argument("--latency", action="store_true",
                     help="print the latency table (TTFT/TPOT/ITL/E2E p50 and p99 per arm, throughput) "
                          "whatever was swept")
    rep.set_defaults(func=cmd_report)

    lst = sub.add_parser("list", help="print the GPU, kernel-profile, framework and model catalogs")
    lst.set_defaults(func=cmd_list)

    cost = sub.add_parser("cost", help="per-operator cost of one forward step")
    cost.add_argument("--gpu", default="a100-80gb-pcie")
    cost.add_argument("--model", default="llama-7b")
    cost.add_argument("--batch", type=_int_list, default=[4], help="sequences (list allowed: 1,4)")
    cost.add_argument("--tokens-per-seq", type=_int_list, default=[1],
                      help="query tokens per sequence (list allowed: 1,16,64)")
    cost.add_argument("--context", type=_int_list, default=[512],
                      help="cached context tokens per sequence (list allowed)")
    cost.add_argument("--stage", choices=STAGES,
                      help="default: decode for 1 token per sequence, prefill for more with no context, "
                           "verify otherwise")
    cost.add_argument("--format", choices=("table", "csv"), default="table")
    cost.add_argument("--kernel-profile", metavar="NAME|FILE",
                      help="kernel profile (bundled name or calibrate's TOML); default: the GPU's own")
    cost.add_argument("--tensor-parallel-size", type=int, choices=(1, 2, 4, 8), default=1,
                      help="GPUs the model is split across (default 1)")
    cost.add_argument("--framework", default="vllm",
                      help="serving framework: its per-step overhead and its kernels (default vllm; none = kernels only)")
    cost.add_argument("--quantization", choices=("none", "fp8"), default="none",
                      help="the decoder layers' linear layers: none (16-bit) or fp8 (W8A8, per-tensor scales; "
                           "needs FP8 tensor cores)")
    cost.add_argument("--kv-cache-dtype", choices=("auto", "fp8"), default="auto",
                      help="the KV cache: auto (16-bit) or fp8 (one byte a K or V element)")
    cost.add_argument("--fp8-activation-quantization", choices=("fused", "standalone"), default="fused",
                      help="with --quantization fp8: fused (the kernel before each linear layer writes its input in "
                           "FP8; default) or standalone (each quantizes its input with kernels of its own, as the "
                           "framework's measured FP8 layers do)")
    cost.set_defaults(func=cmd_cost)

    cal = sub.add_parser("calibrate", help="fit a GPU's kernel profile to measured kernel tables")
    cal.add_argument("--gpu", required=True, help="catalog GPU whose datasheet peaks the profile is relative to")
    cal.add_argument("--framework", help="whose kernels: vllm, sglang, trtllm, ... (default: the table's "
                                         "only framework, else vllm)")
    source = cal.add_mutually_exclusive_group()
    source.add_argument("--table", metavar="CSV",
                        help="a kernel table (servesim profile's CSV); default: the bundled measured tables")
    source.add_argument("--aiconfigurator", action="store_true",
                        help="read aiconfigurator-core's installed database (pip install 'servesim[calibrate]')")
    cal.add_argument("--measured-gpu", help="the GPU's name in the table (default: the catalog's measured_as, "
                                            "else the table's only GPU)")
    cal.add_argument("--framework-version", metavar="VERSION",
                     help="fit on this version's rows only (default: each op class's newest version)")
    cal.add_argument("--out", metavar="FILE.toml", help="write the profile here (default: <gpu>-<framework>.toml)")
    cal.set_defaults(func=cmd_calibrate)

    prof = sub.add_parser("profile", help="time a model's kernels on this machine and write a kernel table")
    prof.add_argument("--model", default="llama-7b", help="catalog model whose layer shapes are timed")
    prof.add_argument("--out", default="kernels.csv", help="kernel table to write (CSV; default kernels.csv)")
    prof.add_argument("--backend", choices=("torch", "numpy"), default="torch",
                      help="torch (pip install 'servesim[profile]'; default) or numpy (CPU only, for testing)")
    prof.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    prof.add_argument("--full", action="store_true",
                      help="the full grid: long prompts and contexts, 16 token counts (default: a quick grid, "
                           "enough shapes to fit every op class)")
    prof.add_argument("--repeat", type=int, default=5, help="timed runs per kernel (median kept)")
    prof.add_argument("--tensor-parallel-sizes", metavar="N[,N...]", default=None,
                      help="time the GEMM shards and the share of the heads one GPU runs at these tensor-parallel "
                           "sizes (default: those of 1, 2, 4, 8 that split the model's heads and MLP width)")
    prof.add_argument("--allreduce-gpus", metavar="N[,N...]|none", default=None,
                      help="time the all-reduce (tensor parallelism's) over groups of N local devices, N >= 2 "
                           "(default: 2, 4, 8 ... up to this machine's CUDA devices; none on a CPU)")
    prof.add_argument("--no-fp8", action="store_true",
                      help="do not time the GEMMs as FP8 linear layers (timed by default where the device has FP8 "
                           "tensor cores: H100, H200, L40S, B200; a profile fitted without them estimates FP8 "
                           "GEMMs from the 16-bit ones)")
    prof.set_defaults(func=cmd_profile)
    return p


class Terminated(BaseException):
    """SIGTERM: unwinds like Ctrl-C, so that a run removes its staging folder."""


def _on_sigterm(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    from servesim.inputs import InputError
    from servesim.output import OutputError

    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return args.func(args)
    except (ScenarioError, UsageError, InputError, OutputError) as e:
        print(f"servesim: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("servesim: interrupted; nothing written", file=sys.stderr)
        return 130
    except Terminated:
        print("servesim: terminated; nothing written", file=sys.stderr)
        return 143
    except BrokenPipeError:  # the reader went away (`servesim list | head`): stop quietly
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
