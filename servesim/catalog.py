"""Reading the bundled data files (catalogs and reference tables) from the package.

Everything under ``servesim/data`` ships with the package, so an installed servesim
needs nothing from the source tree. This module is the only place that knows where
those files live.
"""

from __future__ import annotations

import csv
import json
import tomllib
from functools import cache
from importlib import resources


def data_path(name: str) -> str:
    """File-system path of the bundled data file ``name`` (for readers that want a path)."""
    return str(resources.files("servesim").joinpath("data", name))


def data_text(name: str) -> str:
    """Text of the bundled data file ``name``."""
    return resources.files("servesim").joinpath("data", name).read_text(encoding="utf-8")


@cache
def data_toml(name: str) -> dict:
    """A bundled TOML file, parsed (cached; callers must not mutate it)."""
    return tomllib.loads(data_text(name))


@cache
def data_csv(name: str) -> tuple[dict[str, str], ...]:
    """A bundled CSV file as rows (strings; callers convert; cached, must not be mutated)."""
    return tuple(csv.DictReader(data_text(name).splitlines()))


@cache
def data_json(name: str) -> dict:
    """A bundled JSON file, parsed (cached; callers must not mutate it)."""
    return json.loads(data_text(name))


def medusa_figure() -> list[tuple[int, int, float]]:
    """The seed figure: (candidate_tokens, seq_len, speedup) rows."""
    return [(int(r["candidate_tokens"]), int(r["seq_len"]), float(r["speedup"]))
            for r in data_csv("medusa_fig_bs4_seqlen.csv")]


def medusa_acceptance_curve() -> dict[int, float]:
    """Mean tokens accepted per verify step, by candidate tokens (Medusa's simulation)."""
    return {int(r["candidate_tokens"]): float(r["acceptance_rate"])
            for r in data_csv("medusa_sim_acceptance_rate.csv")}
