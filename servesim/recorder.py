"""What a run records: exact per-arm totals always, and rows for the tables when asked.

The engine hands every GPU stage and every finished (or rejected, unfinished or
not arrived) request to a :class:`Recorder`. It keeps

* per arm, :class:`ArmTotals`: GPU time and tokens by stage and batch size, and one
  compact column (``array``) per request figure: everything the summary needs, exact,
  at 8 bytes per request and figure;
* optionally the rows of ``steps.parquet`` and ``requests.parquet`` (plain tuples),
  every row or every ``sample_every``-th, either in memory or, with a ``sink``, flushed
  to it every ``flush_rows`` rows, so that a long run's memory stays bounded.
"""

from __future__ import annotations

from array import array

import numpy as np

STEP_FIELDS = ("point_id", "arm", "stage", "start_s", "duration_s", "batch_size",
               "tokens_per_seq", "context_tokens", "tokens_generated", "prefill_seqs",
               "prefill_tokens", "spec_length", "kv_used_tokens", "cost")
"""A step row: ``batch_size`` sequences in the stage, of which ``prefill_seqs`` carry
``prefill_tokens`` prompt tokens (a prefill stage, or the chunks of a mixed step) and
the others ``tokens_per_seq`` decode (or verify) tokens each; ``spec_length`` is the
speculation length the step ran at (drafted tokens, or tree depth; 0 = plain decode);
``kv_used_tokens`` the KV cache held when it started (tokens; whole blocks with paged KV:
the occupancy behind vLLM's ``kv_cache_usage_perc`` gauge)."""
REQUEST_FIELDS = ("point_id", "arm", "request_id", "arrival_s", "start_s",
                  "first_token_s", "finish_s", "prompt_len", "output_len",
                  "verify_steps", "accepted_tokens", "queue_delay_s", "slot_wait_s",
                  "gpu_wait_s", "status", "preemptions")
STATUS = {"finished": 0, "rejected": 1, "unfinished": 2, "not_arrived": 3}
"""Every request of an arm ends in exactly one of these (codes of ``ArmTotals``)."""


class ArmTotals:
    """Exact aggregates of one arm (see module docstring)."""

    FLOAT_COLUMNS = ("arrival_s", "start_s", "first_token_s", "finish_s", "queue_delay_s",
                     "slot_wait_s", "gpu_wait_s")
    INT_COLUMNS = ("request_id", "prompt_len", "output_len", "verify_steps", "accepted_tokens", "status",
                   "preemptions")

    def __init__(self) -> None:
        self.stages = 0
        self.generated_tokens = 0
        self.busy_s = 0.0
        self.decode_time_s = 0.0
        self.decode_tokens = 0
        self.draft_time_s = 0.0
        self.iterations = 0
        self.batch_time_s: dict[int, float] = {}
        self.batch_tokens: dict[int, int] = {}
        self.emission_end_s = array("d")
        """End times of the stages that give running requests tokens (decode, verify,
        mixed), in order: with the requests' first and last token times, every
        inter-token gap (``metrics.itl_distribution``)."""
        self.pauses: dict[int, tuple[float, ...]] = {}
        """Per request preempted while running: (preempted_s, resumed_s, ...)."""
        self.columns = {c: array("d") for c in self.FLOAT_COLUMNS}
        self.columns.update({c: array("q") for c in self.INT_COLUMNS})
        self._pending: list[tuple] = []  # request rows not yet in the columns

    def add_steps(self, rows: list[tuple]) -> None:
        """Add step rows (fields :data:`STEP_FIELDS`), in the order they ran."""
        batch_time, batch_tokens = self.batch_time_s, self.batch_tokens
        busy_s, decode_time_s, decode_tokens = self.busy_s, self.decode_time_s, self.decode_tokens
        generated, iterations = self.generated_tokens, self.iterations
        draft_time_s = self.draft_time_s
        emitted = self.emission_end_s.append
        for _, _, stage, start_s, duration_s, batch, _, _, tokens, prefill_seqs, _, _, _, _ in rows:
            busy_s += duration_s
            generated += tokens
            if stage == "prefill" or stage == "swap":
                continue
            if stage == "draft":
                draft_time_s += duration_s
            else:
                emitted(start_s + duration_s)
            batch -= prefill_seqs  # a mixed step's decoding batch
            decode_time_s += duration_s
            decode_tokens += tokens
            if stage != "draft":
                iterations += 1
            if batch in batch_time:
                batch_time[batch] += duration_s
                batch_tokens[batch] += tokens
            else:
                batch_time[batch] = duration_s
                batch_tokens[batch] = tokens
        self.stages += len(rows)
        self.busy_s, self.decode_time_s, self.decode_tokens = busy_s, decode_time_s, decode_tokens
        self.generated_tokens, self.iterations = generated, iterations
        self.draft_time_s = draft_time_s

    def add_request(self, row: tuple) -> None:
        """Add a request row (fields :data:`REQUEST_FIELDS`); rows reach the columns
        1,024 at a time."""
        self._pending.append(row)
        if len(self._pending) >= 1024:
            self._fill_columns()

    def _fill_columns(self) -> None:
        if not self._pending:
            return
        fields = dict(zip(REQUEST_FIELDS, zip(*self._pending)))
        for name, column in list(self.columns.items()):
            values = [STATUS[status] for status in fields[name]] if name == "status" else fields[name]
            try:
                column.extend(values)
            except BufferError:  # arrays from requests() still view it: grow a copy instead
                column = self.columns[name] = array(column.typecode, column)
                column.extend(values)
        self._pending.clear()

    def __getstate__(self) -> dict:
        """Pickled (from worker processes) with all request columns in two byte strings:
        unpickling two dozen small arrays per point was most of a parallel sweep's
        overhead in the parent process."""
        self._fill_columns()
        state = {k: v for k, v in self.__dict__.items() if k not in ("columns", "_pending")}
        state["_float_bytes"] = b"".join(self.columns[c].tobytes() for c in self.FLOAT_COLUMNS)
        state["_int_bytes"] = b"".join(self.columns[c].tobytes() for c in self.INT_COLUMNS)
        return state

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        floats, ints = array("d"), array("q")
        floats.frombytes(state.pop("_float_bytes"))
        ints.frombytes(state.pop("_int_bytes"))
        self.__dict__.update(state)
        self._pending = []
        n = len(floats) // len(self.FLOAT_COLUMNS)
        self.columns = {c: floats[i * n:(i + 1) * n] for i, c in enumerate(self.FLOAT_COLUMNS)}
        self.columns.update({c: ints[i * n:(i + 1) * n] for i, c in enumerate(self.INT_COLUMNS)})

    def emissions(self) -> np.ndarray:
        """:attr:`emission_end_s` as a numpy array (a view)."""
        return np.frombuffer(self.emission_end_s, dtype=np.float64)

    def requests(self) -> dict[str, np.ndarray]:
        """The request columns as numpy arrays (no copy: views that keep showing the
        requests recorded so far when more are added)."""
        self._fill_columns()
        return {k: np.frombuffer(v, dtype=np.float64 if v.typecode == "d" else np.int64)
                for k, v in self.columns.items()}


class Recorder:
    """Totals per arm, plus the table rows that are kept (see module docstring).

    keep_steps / keep_requests: whether rows of that table are kept at all;
    sample_every: keep the rows of every n-th request (by id) and every n-th step;
    sink: ``sink(steps_rows, request_rows)`` receives the rows every ``flush_rows`` and
        at :meth:`flush`; without a sink the rows stay in ``steps`` / ``requests``.

    Kept step rows are stored transposed, one tuple per field for each batch the
    engine hands over: a long run keeps hundreds of thousands of them, and as separate
    tuples every one would be an object for Python's cyclic garbage collector to walk.
    """

    def __init__(self, keep_steps: bool = True, keep_requests: bool = True, sample_every: int = 1,
                 sink=None, flush_rows: int = 100_000) -> None:
        self._step_columns: list[tuple[tuple, ...]] = []
        self._kept_steps = 0
        self.requests: list[tuple] = []
        self.accepted_counts: dict[str, list[int]] = {}
        """Per arm: accepted_counts[arm][k] = request-steps that drew k tokens."""
        self.length_counts: dict[str, list[int]] = {}
        """Per arm: length_counts[arm][k] = request-steps run at speculation length k."""
        self.arm_stats: dict[str, dict] = {}
        """Per arm: time integrals and counters of the run (see ``Server.stats``)."""
        self.totals: dict[str, ArmTotals] = {}
        self.capped_requests = 0
        """Requests of the workload whose drawn lengths were cut to the model's context."""
        self.keep_steps, self.keep_requests = keep_steps, keep_requests
        self.sample_every, self.sink, self.flush_rows = sample_every, sink, flush_rows
        self._step_count = 0

    def arm(self, arm: str) -> ArmTotals:
        totals = self.totals.get(arm)
        if totals is None:
            totals = self.totals[arm] = ArmTotals()
        return totals

    @property
    def steps(self) -> list[tuple]:
        """The kept step rows (fields :data:`STEP_FIELDS`), in the order they ran."""
        return [row for columns in self._step_columns for row in zip(*columns)]

    def add_steps(self, rows: list[tuple], totals: ArmTotals) -> None:
        """Record GPU stages of one arm, in the order they ran; ``totals`` is that arm's.

        The engine hands its steps over in batches: one call per step would cost a
        tenth of a run's time.
        """
        totals.add_steps(rows)
        if not self.keep_steps:
            return
        if self.sample_every > 1:
            every, count = self.sample_every, self._step_count
            self._step_count += len(rows)
            rows = [row for i, row in enumerate(rows, count + 1) if i % every == 0]
        if rows:
            self._step_columns.append(tuple(zip(*rows)))
            self._kept_steps += len(rows)
            if self.sink is not None and self._kept_steps >= self.flush_rows:
                self.flush()

    def add_request(self, row: tuple, totals: ArmTotals | None = None) -> None:
        """Record one request (a row of ``requests.parquet``); ``totals`` is its arm's,
        if the caller has it at hand."""
        (totals or self.arm(row[1])).add_request(row)
        if self.keep_requests and row[2] % self.sample_every == 0:
            self.requests.append(row)
            if self.sink is not None and len(self.requests) >= self.flush_rows:
                self.flush()

    def flush(self) -> None:
        """Hand the kept rows to the sink (if any) and forget them."""
        if self.sink is not None and (self._step_columns or self.requests):
            self.sink(self.steps, self.requests)
            self._step_columns, self._kept_steps, self.requests = [], 0, []
