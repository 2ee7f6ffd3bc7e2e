"""Records -> pandas DataFrames -> Parquet files with metadata, written atomically.

Every file carries, in its Parquet key-value metadata, the scenario text
(``servesim.scenario``), the servesim version (``servesim.version``) and the seed
(``servesim.seed``). All files of a run are first written to temporary names in the
output folder and renamed only when all of them are complete, so a failed run leaves
no half-written result behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from servesim import __version__
from servesim.costmodel import OP_NAMES
from servesim.engine import Recorder

META_SCENARIO = b"servesim.scenario"
META_VERSION = b"servesim.version"
META_SEED = b"servesim.seed"


def _with_replication(recorders: list[tuple[int, Recorder]], rows_of) -> tuple[list[tuple], list[int]]:
    rows, reps = [], []
    for replication, recorder in recorders:
        these = rows_of(recorder)
        rows.extend(these)
        reps.extend([replication] * len(these))
    return rows, reps


def steps_frame(recorders: list[tuple[int, Recorder]]) -> pd.DataFrame:
    """One row per GPU stage, with a ``<op>_s`` column per operator; ``recorders`` are
    (replication, Recorder) pairs."""
    rows, reps = _with_replication(recorders, lambda r: r.steps)
    fields = Recorder.STEP_FIELDS[:-1]
    columns = {f: [row[i] for row in rows] for i, f in enumerate(fields)}
    columns["replication"] = reps
    frame = pd.DataFrame(columns)
    op_times = [row[-1].op_times() for row in rows]
    for op in OP_NAMES:
        frame[f"{op}_s"] = [t[op] for t in op_times]
    return frame.astype({"point_id": "int64", "batch_size": "int64", "tokens_per_seq": "int64",
                         "context_tokens": "int64", "tokens_generated": "int64",
                         "replication": "int64", "start_s": "float64", "duration_s": "float64"})


def requests_frame(recorders: list[tuple[int, Recorder]]) -> pd.DataFrame:
    """One row per request per arm (and replication)."""
    rows, reps = _with_replication(recorders, lambda r: r.requests)
    frame = pd.DataFrame(rows, columns=list(Recorder.REQUEST_FIELDS))
    frame["replication"] = reps
    return frame.astype({"point_id": "int64", "request_id": "int64", "prompt_len": "int64",
                         "output_len": "int64", "verify_steps": "int64",
                         "accepted_tokens": "int64", "replication": "int64"})


def acceptance_frame(results) -> pd.DataFrame:
    """Histogram of tokens drawn per verify step and request, spec arm: one row per
    (point, replication, tokens) with ``count`` and ``fraction`` of that replication."""
    rows = []
    for result in results:
        point_id = result.summary["point_id"]
        for replication, recorder in enumerate(result.recorders):
            counts = recorder.accepted_counts.get("spec", [])
            total = sum(counts)
            rows.extend((point_id, replication, k, c, c / total)
                        for k, c in enumerate(counts) if c)
    frame = pd.DataFrame(rows, columns=["point_id", "replication", "tokens", "count", "fraction"])
    return frame.astype({"point_id": "int64", "replication": "int64", "tokens": "int64",
                         "count": "int64", "fraction": "float64"})


def result_tables(results, write_steps: bool = True) -> dict[str, pd.DataFrame]:
    """All output tables of a run, by file stem."""
    recorders = [(rep, rec) for result in results for rep, rec in enumerate(result.recorders)]
    tables = {"summary": pd.DataFrame([r.summary for r in results]),
              "requests": requests_frame(recorders),
              "acceptance": acceptance_frame(results)}
    if write_steps:
        tables["steps"] = steps_frame(recorders)
    return tables


def metadata(scenario_text: str, seed: int) -> dict[bytes, bytes]:
    return {META_SCENARIO: scenario_text.encode(), META_VERSION: __version__.encode(),
            META_SEED: str(seed).encode()}


def write_tables(out_dir: str | Path, tables: dict[str, pd.DataFrame], scenario_text: str,
                 seed: int) -> list[Path]:
    """Write ``{name: frame}`` as ``name.parquet`` in ``out_dir``, all or nothing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = metadata(scenario_text, seed)
    staged: list[tuple[str, Path]] = []
    try:
        for name, frame in tables.items():
            table = pa.Table.from_pandas(frame, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".parquet.tmp", dir=out)
            os.close(fd)
            staged.append((tmp, out / f"{name}.parquet"))
            pq.write_table(table, tmp)
        for tmp, final in staged:
            os.replace(tmp, final)
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return [final for _, final in staged]


def read_metadata(path: str | Path) -> dict[str, str]:
    """The servesim metadata of a Parquet file written by :func:`write_tables`."""
    meta = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in meta.items() if k.startswith(b"servesim.")}
