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
from servesim.recorder import REQUEST_FIELDS, STEP_FIELDS

META_SCENARIO = b"servesim.scenario"
META_VERSION = b"servesim.version"
META_SEED = b"servesim.seed"


def steps_frame(rows: list[tuple], replication: int = 0) -> pd.DataFrame:
    """Rows of ``steps.parquet``: one per GPU stage, with a ``<op>_s`` column per operator."""
    fields = STEP_FIELDS[:-1]
    columns = {f: [row[i] for row in rows] for i, f in enumerate(fields)}
    columns["replication"] = [replication] * len(rows)
    frame = pd.DataFrame(columns)
    op_times = [row[-1].op_times() for row in rows]
    for op in OP_NAMES:
        frame[f"{op}_s"] = pd.Series([t[op] for t in op_times], dtype="float64")
    frame = frame.astype({"point_id": "int64", "batch_size": "int64", "tokens_per_seq": "int64",
                          "context_tokens": "int64", "tokens_generated": "int64",
                          "prefill_seqs": "int64", "prefill_tokens": "int64", "spec_length": "int64",
                          "kv_used_tokens": "int64",
                          "replication": "int64", "start_s": "float64", "duration_s": "float64",
                          "arm": "str", "stage": "str"})
    # vLLM's step figures: sequences, prompt tokens and decode tokens the step computed
    frame["num_seqs"] = frame["batch_size"]
    frame["num_prefill_tokens"] = frame["prefill_tokens"]
    decoding = (frame["batch_size"] - frame["prefill_seqs"]) * frame["tokens_per_seq"]
    frame["num_decode_tokens"] = decoding.where(frame["stage"] != "prefill", 0).astype("int64")
    frame["num_batched_tokens"] = frame["num_prefill_tokens"] + frame["num_decode_tokens"]
    return frame


def requests_frame(rows: list[tuple], replication: int = 0) -> pd.DataFrame:
    """Rows of ``requests.parquet``: one per request per arm."""
    frame = pd.DataFrame(rows, columns=list(REQUEST_FIELDS))
    frame["replication"] = replication
    return frame.astype({"point_id": "int64", "request_id": "int64", "prompt_len": "int64",
                         "output_len": "int64", "verify_steps": "int64", "accepted_tokens": "int64",
                         "replication": "int64", "arrival_s": "float64", "start_s": "float64",
                         "first_token_s": "float64", "finish_s": "float64",
                         "queue_delay_s": "float64", "slot_wait_s": "float64",
                         "gpu_wait_s": "float64", "arm": "str", "status": "str", "preemptions": "int64"})


FRAMES = {"steps": steps_frame, "requests": requests_frame,
          "summary": lambda rows, replication=0: pd.DataFrame(rows),
          "acceptance": lambda rows, replication=0: acceptance_table(rows)}


class PartSink:
    """Receives a recorder's rows and appends them, as row groups, to per-point part
    files in ``part_dir`` (``<point>-<replication>-<table>.parquet``); the parent
    process merges the parts into the final tables."""

    def __init__(self, part_dir: str | Path, point_id: int, replication: int) -> None:
        self.part_dir, self.point_id, self.replication = Path(part_dir), point_id, replication
        self.writers: dict[str, pq.ParquetWriter] = {}
        self.paths: dict[str, Path] = {}

    def _write(self, table_name: str, rows: list[tuple]) -> None:
        if not rows:
            return
        table = pa.Table.from_pandas(FRAMES[table_name](rows, self.replication), preserve_index=False)
        writer = self.writers.get(table_name)
        if writer is None:
            path = self.part_dir / f"{self.point_id:08d}-{self.replication:04d}-{table_name}.parquet"
            writer = self.writers[table_name] = pq.ParquetWriter(path, table.schema)
            self.paths[table_name] = path
        writer.write_table(table)

    def __call__(self, steps: list[tuple], requests: list[tuple]) -> None:
        self._write("steps", steps)
        self._write("requests", requests)

    def close(self) -> dict[str, Path]:
        for writer in self.writers.values():
            writer.close()
        return dict(self.paths)


STREAM_ROWS = 2000
"""Rows of a per-point table kept in memory before they go to a part file."""


class FrameSink:
    """Rows of a per-point table (summary, acceptance) streamed to part files of at most
    ``rows`` rows each, every part cast to the first one's schema, so that a sweep's
    memory stays bounded however many points it has."""

    def __init__(self, part_dir: str | Path, name: str, rows: int | None = None) -> None:
        self.part_dir, self.name, self.limit = Path(part_dir), name, rows or STREAM_ROWS
        self.pending: list = []
        self.paths: list[Path] = []
        self.schema: pa.Schema | None = None
        self.count = 0

    def add(self, rows: list, frame_of) -> None:
        """Add rows; ``frame_of(rows)`` makes their DataFrame."""
        self.pending.extend(rows)
        self.count += len(rows)
        if len(self.pending) >= self.limit:
            self.flush(frame_of)

    def flush(self, frame_of) -> None:
        if not self.pending:
            return
        table = pa.Table.from_pandas(frame_of(self.pending), preserve_index=False)
        if self.schema is None:
            self.schema = table.schema
        else:
            table = table.cast(self.schema)
        path = self.part_dir / f"{self.name}-{len(self.paths):06d}.parquet"
        pq.write_table(table, path)
        self.paths.append(path)
        self.pending = []


def acceptance_rows(result) -> list[tuple]:
    """Rows of ``acceptance.parquet`` of one point's result (see :func:`acceptance_frame`)."""
    point_id = result.summary["point_id"]
    rows = []
    for replication, counts in enumerate(result.accepted_counts):
        total = sum(counts)
        rows.extend((point_id, replication, k, c, c / total) for k, c in enumerate(counts) if c)
    return rows


def acceptance_table(rows: list[tuple]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["point_id", "replication", "tokens", "count", "fraction"])
    return frame.astype({"point_id": "int64", "replication": "int64", "tokens": "int64",
                         "count": "int64", "fraction": "float64"})


def acceptance_frame(results) -> pd.DataFrame:
    """Histogram of tokens drawn per verify step and request, spec arm: one row per
    (point, replication, tokens) with ``count`` and ``fraction`` of that replication."""
    return acceptance_table([row for result in results for row in acceptance_rows(result)])


def metadata(scenario_text: str, seed: int) -> dict[bytes, bytes]:
    return {META_SCENARIO: scenario_text.encode(), META_VERSION: __version__.encode(),
            META_SEED: str(seed).encode()}


def _merge_parts(parts: list[Path], name: str, target: str, meta: dict) -> None:
    """Concatenate part files, row group by row group, into ``target`` (bounded memory)."""
    schema = pq.read_schema(parts[0]) if parts else pa.Table.from_pandas(
        FRAMES[name]([]), preserve_index=False).schema
    schema = schema.with_metadata({**(schema.metadata or {}), **meta})
    with pq.ParquetWriter(target, schema) as writer:
        for part in parts:
            source = pq.ParquetFile(part)
            for group in range(source.num_row_groups):
                writer.write_table(source.read_row_group(group).replace_schema_metadata(schema.metadata))


def write_tables(out_dir: str | Path, tables: dict[str, pd.DataFrame], scenario_text: str,
                 seed: int, parts: dict[str, list[Path]] | None = None) -> list[Path]:
    """Write ``{name: frame}`` as ``name.parquet`` in ``out_dir``, and ``{name: part
    files}`` merged into ``name.parquet``; all or nothing."""
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
        for name, files in (parts or {}).items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".parquet.tmp", dir=out)
            os.close(fd)
            staged.append((tmp, out / f"{name}.parquet"))
            _merge_parts(files, name, tmp, meta)
        umask = os.umask(0)
        os.umask(umask)
        for tmp, final in staged:
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
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
