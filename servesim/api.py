"""The Python API: run a scenario and get its tables as pandas DataFrames.

    import servesim
    tables = servesim.run("width_under_load", overrides=["num_requests=100"])
    tables.summary[["rate_per_s", "candidate_tokens", "spec_e2e_p99_s"]]

``run`` takes a scenario as a file path, a bundled scenario's name, TOML text or a dict
of sections (``{"model": {"model": "llama-3-8b"}, "sweep": {"rate_per_s": [1, 2]}}``),
runs every point in memory and returns :class:`Tables`; it writes files only when
``out`` is given (then exactly what ``servesim run --out`` writes). Bad input raises
:class:`servesim.scenario.ScenarioError` (``InputError`` for a bad data file,
``servesim.cli.UsageError`` for a name that is neither a file nor a bundled scenario)
with the message the command line prints.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from servesim.scenario import Scenario, load_scenario


@dataclass(frozen=True)
class Tables:
    """A run's tables (columns as in README's "Output tables")."""

    summary: pd.DataFrame
    requests: pd.DataFrame
    steps: pd.DataFrame
    acceptance: pd.DataFrame
    scenario: Scenario


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if isinstance(value, float) and math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a scenario value")


def scenario_text(sections: Mapping[str, Any]) -> str:
    """TOML text of a scenario given as a dict: top-level keys, then one table per
    section (nested tables, such as ``model.define.NAME``, as sub-tables)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in sections.items() if not isinstance(v, Mapping)]

    def table(name: str, entries: Mapping[str, Any]) -> None:
        lines.append(f"\n[{name}]")
        nested = {k: v for k, v in entries.items() if isinstance(v, Mapping) and k in ("define", "profile")}
        lines.extend(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in entries.items() if k not in nested)
        for k, v in nested.items():
            if k == "define":
                for model, fields in v.items():
                    table(f"{name}.define.{json.dumps(str(model))}", fields)
            else:
                table(f"{name}.{k}", v)

    for name, entries in sections.items():
        if isinstance(entries, Mapping):
            table(name, entries)
    return "\n".join(lines) + "\n"


def load(scenario: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Scenario:
    """A validated scenario from a path, a bundled name (resolved as ``servesim run``
    resolves it), TOML text or a dict."""
    from servesim.cli import load_scenario_arg

    if isinstance(scenario, Mapping):
        return load_scenario("<dict>", list(overrides), text=scenario_text(scenario))
    text = str(scenario)
    if isinstance(scenario, Path) or ("\n" not in text and "=" not in text):
        return load_scenario_arg(text, list(overrides))
    return load_scenario("<text>", list(overrides), text=text)


def run(scenario: str | Path | Mapping[str, Any], *, overrides: Sequence[str] = (), jobs: int = 1,
        out: str | Path | None = None) -> Tables:
    """Run ``scenario`` (see module docstring) and return its tables; ``overrides`` are
    ``KEY=VALUE`` strings as for ``--set``; ``jobs`` worker processes (results do not
    depend on it); ``out``: also write the tables there."""
    loaded = load(scenario, overrides)
    if out is not None:
        from servesim.cli import _write_run
        args = argparse.Namespace(jobs=jobs, executor="local", address=None)
        _write_run(Path(out), loaded, args)
        frames = {name: (pd.read_parquet(Path(out) / f"{name}.parquet")
                         if (Path(out) / f"{name}.parquet").exists() else pd.DataFrame())
                  for name in ("summary", "requests", "steps", "acceptance")}
        return Tables(frames["summary"], frames["requests"], frames["steps"], frames["acceptance"], loaded)
    from servesim.results import acceptance_frame, requests_frame, steps_frame
    from servesim.runner import run_scenario

    results = run_scenario(loaded, jobs=jobs)
    steps = [steps_frame(rec.steps, rep) for r in results for rep, rec in enumerate(r.recorders) if rec.steps]
    requests = [requests_frame(rec.requests, rep) for r in results for rep, rec in enumerate(r.recorders)
                if rec.requests]
    return Tables(summary=pd.DataFrame([r.summary for r in results]),
                  requests=pd.concat(requests, ignore_index=True) if requests else requests_frame([]),
                  steps=pd.concat(steps, ignore_index=True) if steps else pd.DataFrame(),
                  acceptance=acceptance_frame(results), scenario=loaded)
